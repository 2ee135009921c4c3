"""Training images/s of the small Fashion-MNIST models, and of candidate speed-ups, side by side in one run.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/train_speed.py --model wrn16-1 --json
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/train_speed.py --model wrn10-1 --json
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/train_speed.py --model wrn10-1 --compile --json

Random 1x28x28 uint8 images, batch 128, SGD (momentum 0.9, wd 5e-4), cross-entropy, no augmentation.
Settings, each timed --rounds times in turn (A, B, C, ..., A, B, C, ...) and reported as the median:
  loop-fp32 / loop-bf16   the project's loop (ownership.training.train), one epoch of --images
  step-fp32 / step-bf16   a bare training step (same model, channels_last) - the reference for ratios
  step<B>-fp32/-bf16      the bare step at batch B (--small-batches): the cost per image of more steps
  contiguous-fp32         the bare step without channels_last
  vmap<K>-fp32/-bf16      K models trained as one batched computation (torch.func.stack_module_state +
                          functional_call under vmap; each model its own batch), images/s of all K together
  compile-fp32/-bf16      torch.compile (inductor) of the model; compile seconds reported separately
  query-<T>-fp32/-bf16    the bare step plus a forward pass of teacher T (--teacher) on the same batch:
                          distillation querying the victim every step (with augmentation); without
                          augmentation the queries are made once (ownership.attacks.distillation), so the
                          step alone is what an epoch costs
Ratios are images/s against step-fp32 (> 1 is faster; for vmap, than training the K one after another).
--json prints one JSON line.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from network import get_model  # noqa: E402
from ownership.data import ImageSet  # noqa: E402
from ownership.training import train  # noqa: E402


def autocast(bf16):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def step_runner(model, bf16, channels_last=True):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def run(x, y):
        x = x.contiguous(memory_format=fmt)
        with autocast(bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def vmap_runner(arch, k, bf16):
    """K models as one computation: stacked parameters (leaves, one SGD over all), vmap over models."""
    from torch.func import functional_call, stack_module_state
    models = [get_model(arch, 10, 1) for _ in range(k)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    opt = torch.optim.SGD(list(params.values()), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    fn = torch.vmap(one, in_dims=(0, 0, 0), randomness="different")

    def run(x, y):  # x: (B, ...) -> every model gets a rolled copy (its own batch order)
        xs = torch.stack([x.roll(i, 0) for i in range(k)])
        ys = torch.stack([y.roll(i, 0) for i in range(k)])
        with autocast(bf16):
            logits = fn(params, buffers, xs).float()
        loss = F.cross_entropy(logits.flatten(0, 1), ys.flatten(), reduction="sum") / len(y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def main(args):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n, b = args.images, args.batch
    xu = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    yall = torch.randint(0, 10, (n,), generator=g)
    images = ImageSet(xu, yall, [str(i) for i in range(10)])
    xf = (xu.float() / 255 - 0.286) / 0.353
    batches = [(xf[i:i + b], yall[i:i + b]) for i in range(0, n - n % b, b)]
    per = len(batches) * b  # images per model per timed call

    settings = {}  # name -> (callable timing one pass, models trained at once)
    for prec, bf16 in (("fp32", False), ("bf16", True)):
        def loop(amp="bf16" if bf16 else "none"):
            train(get_model(args.model, 10, 1), images, "fmnist", epochs=1, lr=0.1, batch=b, augment=False,
                  label_smoothing=0.0, schedule="onecycle", amp=amp, desc="loop")
        settings[f"loop-{prec}"] = (loop, 1)
    for prec, bf16 in (("fp32", False), ("bf16", True)):
        settings[f"step-{prec}"] = (step_runner(get_model(args.model, 10, 1), bf16), 1)
    for sb in args.small_batches:
        for prec, bf16 in (("fp32", False), ("bf16", True)):
            r = step_runner(get_model(args.model, 10, 1), bf16)
            settings[f"step{sb}-{prec}"] = ((lambda r, sb: lambda x, y: [r(x[i:i + sb], y[i:i + sb])
                                                                         for i in range(0, len(y), sb)])(r, sb), 1)
    settings["contiguous-fp32"] = (step_runner(get_model(args.model, 10, 1), False, channels_last=False), 1)
    for k in args.vmap:
        for prec, bf16 in (("fp32", False), ("bf16", True)):
            settings[f"vmap{k}-{prec}"] = (vmap_runner(args.model, k, bf16), k)
    if args.teacher:
        for prec, bf16 in (("fp32", False), ("bf16", True)):
            teacher = get_model(args.teacher, 10, 1).eval().to(memory_format=torch.channels_last)
            r = step_runner(get_model(args.model, 10, 1), bf16)

            def query(x, y, r=r, teacher=teacher, bf16=bf16):
                with torch.no_grad(), autocast(bf16):
                    teacher(x.contiguous(memory_format=torch.channels_last))
                r(x, y)
            settings[f"query-{args.teacher}-{prec}"] = (query, 1)
    compile_s = {}
    if args.compile:
        for prec, bf16 in (("fp32", False), ("bf16", True)):
            m = torch.compile(get_model(args.model, 10, 1))
            r = step_runner(m, bf16)
            t = time.time()
            r(*batches[0])
            r(*batches[1])
            compile_s[prec] = round(time.time() - t, 1)
            settings[f"compile-{prec}"] = (r, 1)

    def timed(name):
        fn, k = settings[name]
        t = time.perf_counter()
        if name.startswith("loop"):
            fn()
        else:
            for x, y in batches:
                fn(x, y)
        return time.perf_counter() - t

    for name in settings:  # warm-up: allocator, oneDNN primitives
        if not name.startswith("loop"):
            settings[name][0](*batches[0])
    times = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name in settings:
            times[name].append(timed(name))
    out = dict(model=args.model, threads=torch.get_num_threads(), images=per, batch=b, rounds=args.rounds,
               load=os.getloadavg()[0], compile_s=compile_s, ips={}, ratio={})
    for name, ts in times.items():
        k = settings[name][1]
        out["ips"][name] = round(k * per / statistics.median(ts), 1)  # all k models together
    ref = out["ips"]["step-fp32"]
    for name, ips in out["ips"].items():
        out["ratio"][name] = round(ips / ref, 2)
        print(f"{args.model} {name:16s} {ips:8.1f} images/s (all models together)  x{ips / ref:.2f}")
    if compile_s:
        print(f"compile (first two steps): {compile_s}")
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wrn16-1")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--vmap", type=int, nargs="*", default=[2, 4], help="models per batched computation")
    p.add_argument("--small-batches", type=int, nargs="*", default=[32, 64], help="bare step at these batches")
    p.add_argument("--teacher", default=None, help="also time distillation's per-step victim query (e.g. wrn16-1)")
    p.add_argument("--compile", action="store_true", help="also torch.compile (slow to compile)")
    p.add_argument("--json", action="store_true")
    main(p.parse_args())
