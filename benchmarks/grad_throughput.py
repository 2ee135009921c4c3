"""Throughput of per-sample reduced gradients (images/s), all methods in one process.

    python benchmarks/grad_throughput.py --model wrn16-1 --json
    python benchmarks/grad_throughput.py --model wrn28-10 --images 64 --json
    python benchmarks/grad_throughput.py --model wrn16-1 --images 512 --device cuda --json

On one randomly initialised model (BatchNorm running statistics and affine parameters put in a
non-trivial state, eval mode) and one set of random images (10 classes), it times:
  reference_loop  ownership.gradients.reduced_grads_loop, the reference's batch-1 loop;
  vmap            ownership.gradients.reduced_grads_vmap, in chunks (of at most --batch-size images,
                  fewer where the per-sample gradients of all parameters would not fit in memory);
  ours            ownership.gradients.GradientEngine, in chunks of --batch-size;
  limit           plain batched forward + backward of the mean CE, all parameter gradients (no
                  per-sample gradients at all: the speed a per-sample method cannot beat by much);
  opacus          Opacus' GradSampleModule, only if it is importable.
Each method is warmed up on one chunk first (the loop on two images), then the methods take turns
for --repeats passes and each one's best pass is reported; CUDA is synchronised around every timed
region.
Sign mismatches of vmap and ours are counted against the loop, over the images the loop ran on
(--loop-images, default min(images, 128)). In float32 a batched forward rounds differently from the
loop's batch-1 forward, so a ReLU input within rounding of 0 can switch and flip a near-zero reduced
value: a few per million on WRN-16-1 (several per 10,000 on WRN-28-10), and the loop itself differs
from a float64 loop as often. So the same comparison is also made in float64 on a float64 copy of
the model (--f64-images, default: all the loop's images for models up to 2M parameters, else 16),
where the methods must agree exactly (sign_mismatches_f64), and the float32 loop and ours are
compared with the float64 loop (loop_vs_f64_mismatches, ours_vs_f64_mismatches).
With --json the last line is one JSON object; "loadavg" records the machine's load before/after.
"""
import argparse
import copy
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from network import get_model  # noqa: E402
from ownership.gradients import (GradientEngine, feature_dim, reduced_grads_loop,  # noqa: E402
                                 reduced_grads_vmap)


def make_model(name, in_channels, num_classes, size, device, seed=0):
    """A random model in eval mode whose BatchNorm layers are not the identity: random affine
    parameters and running statistics gathered (cumulative average) on random images."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = get_model(name, num_classes, in_channels)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.momentum = None
                m.reset_running_stats()
        model.train()
        for _ in range(2):
            model(torch.randn(16, in_channels, size, size, generator=g))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.1
    return model.to(device).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_pass(fn, x, y, bs, device):
    """(seconds, outputs) of one pass over x in chunks of bs."""
    outs = []
    sync(device)
    t = time.perf_counter()
    for s in range(0, len(x), bs):
        outs.append(fn(x[s:s + bs], y[s:s + bs]))
    sync(device)
    return time.perf_counter() - t, outs


def mismatches(a, ref):
    return int((torch.sign(a.float().cpu()) != torch.sign(ref.float().cpu())).sum())


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="wrn16-1")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--loop-images", type=int, default=None, help="images for the batch-1 loop (default min(images, 128))")
    p.add_argument("--vmap-batch-size", type=int, default=None,
                   help="chunk for vmap (default: batch size, capped by memory for all per-sample gradients)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per method, round robin (best is reported)")
    p.add_argument("--f64-images", type=int, default=None,
                   help="images for the float64 check (0: none; default all loop images, 16 above 2M parameters)")
    p.add_argument("--conv-method", default="auto", help="GradientEngine conv_method (auto, unfold, grouped, shifted)")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"], help="GradientEngine channels_last")
    p.add_argument("--tf32", default="default", choices=["default", "off"],
                   help="CUDA: 'off' disables TF32 in convolutions and matmuls (PyTorch lets cuDNN use it by default)")
    p.add_argument("--skip", default="", help="comma-separated methods not to run: loop,vmap,ours,limit,f64")
    p.add_argument("--json", action="store_true")
    return p


def make_engine(m, a):
    """The GradientEngine of model `m` with the flags' conv method and memory format."""
    cl = {"auto": None, "on": True, "off": False}[a.channels_last]
    if a.conv_method == "auto" and cl is None:
        return GradientEngine(m)  # (also runs against engines without these options)
    return GradientEngine(m, a.conv_method, cl)


def timed_methods(a, model, engine, bs, vbs, n_loop, say):
    """[(name, function of (x, y), chunk, images)] of the methods that --skip leaves."""
    def limit(xb, yb):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()

    methods = [("reference_loop", lambda xb, yb: reduced_grads_loop(model, xb, yb), bs, n_loop),
               ("vmap", lambda xb, yb: reduced_grads_vmap(model, xb, yb), vbs, a.images),
               ("ours", engine, bs, a.images),
               ("limit", limit, bs, a.images)]
    try:
        from opacus import GradSampleModule
    except ImportError:
        GradSampleModule = None
        say("opacus          not installed, skipped")
    if GradSampleModule is not None:
        gsm = GradSampleModule(model)

        def opacus(xb, yb):
            gsm.zero_grad(set_to_none=True)
            F.cross_entropy(gsm(xb), yb, reduction="sum").backward()
            for q in gsm.parameters():
                q.grad_sample = None

        methods.append(("opacus", opacus, bs, a.images))
    skip = set(filter(None, a.skip.split(",")))
    return [m for m in methods if m[0].replace("reference_", "") not in skip]


def round_robin(methods, x, y, repeats, device):
    """({name: best seconds}, {name: outputs}) of the methods taking turns `repeats` times, so that a
    passing load hits all of them alike, each warmed up on one chunk first (two images for the loop)."""
    for name, fn, b, n in methods:
        w = 2 if name == "reference_loop" else b
        fn(x[:w], y[:w])
    sync(device)
    best, outs = {}, {}
    for _ in range(repeats):
        for name, fn, b, n in methods:
            t, o = one_pass(fn, x[:n], y[:n], b, device)
            best[name] = min(best.get(name, float("inf")), t)
            if name in ("reference_loop", "vmap", "ours"):
                outs[name] = torch.cat(o)
            del o
    return best, outs


def f64_check(res, model, engine, x, y, ref, n64, bs, vbs, a, say):
    """The sign comparison in float64 on the first n64 images, where rounding cannot decide a sign, into `res`."""
    m64 = copy.deepcopy(model).double()
    x64, y64 = x[:n64].double(), y[:n64]
    ref64 = reduced_grads_loop(m64, x64, y64)
    ours64 = make_engine(m64, a)(x64, y64)
    vmap64 = torch.cat([reduced_grads_vmap(m64, x64[s:s + vbs], y64[s:s + vbs]) for s in range(0, n64, vbs)])
    res["f64_images"] = n64
    res["sign_mismatches_f64"] = mismatches(ours64, ref64) + mismatches(vmap64, ref64)
    res["loop_vs_f64_mismatches"] = mismatches(ref[:n64], ref64)
    ours32 = torch.cat([engine(x[s:min(s + bs, n64)], y[s:min(s + bs, n64)]) for s in range(0, n64, bs)])
    res["ours_vs_f64_mismatches"] = mismatches(ours32, ref64)
    say(f"float64 check on {n64} images: ours and vmap vs the float64 loop {res['sign_mismatches_f64']} "
        f"sign mismatches; float32 vs the float64 loop: loop {res['loop_vs_f64_mismatches']}, "
        f"ours {res['ours_vs_f64_mismatches']} (of {ref64.numel()})")


def main(args):
    a = get_parser().parse_args(args)
    device = torch.device(a.device)
    if a.tf32 == "off":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    model = make_model(a.model, a.in_channels, a.num_classes, a.size, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.images, a.in_channels, a.size, a.size, generator=g).to(device)
    y = torch.randint(0, a.num_classes, (a.images,), generator=g).to(device)
    bs = min(a.batch_size, a.images)
    n_loop = min(a.loop_images or min(a.images, 128), a.images)
    nparams = sum(q.numel() for q in model.parameters())
    budget = (16 if device.type == "cuda" else 2) * 2 ** 30  # bytes of per-sample gradients per vmap chunk
    vbs = a.vmap_batch_size or max(1, min(bs, budget // (4 * nparams)))
    res = dict(model=a.model, device=str(device), images=a.images, batch_size=bs, loop_images=n_loop,
               vmap_batch_size=vbs, dim=feature_dim(model), params=nparams, threads=torch.get_num_threads(),
               conv_method=a.conv_method, channels_last=a.channels_last, torch=torch.__version__,
               loadavg=[round(os.getloadavg()[0], 2)])
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
        res["tf32"] = dict(conv=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32)

    def say(*msg):
        print(*msg, file=sys.stderr if a.json else sys.stdout, flush=True)

    say(f"{a.model} on {device}: {a.images} images {a.in_channels}x{a.size}x{a.size}, batch {bs}, "
        f"{nparams} parameters, reduced dim {res['dim']}, {torch.get_num_threads()} threads")
    engine = make_engine(model, a)
    methods = timed_methods(a, model, engine, bs, vbs, n_loop, say)
    best, outs = round_robin(methods, x, y, a.repeats, device)
    ref = outs.get("reference_loop")
    for name, fn, b, n in methods:
        res[f"{name}_ips"] = n / best[name]
        line = f"{name:15s} {n / best[name]:10.1f} img/s"
        line += f"  (batch 1, on the first {n} of {a.images} images)" if name == "reference_loop" else f"  (chunks of {b})"
        if name in ("vmap", "ours") and ref is not None:
            got = outs[name][:n_loop]
            res[f"{name}_sign_mismatches"] = mismatches(got, ref)
            res[f"{name}_max_abs_diff"] = float((got.float().cpu() - ref.float().cpu()).abs().max())
            line += f"  sign mismatches vs loop: {res[f'{name}_sign_mismatches']} of {ref.numel()}"
        say(line)
    del outs
    model.zero_grad(set_to_none=True)
    if ref is not None:
        res["sign_mismatches"] = sum(res.get(f"{k}_sign_mismatches", 0) for k in ("vmap", "ours"))
    n64 = min(n_loop, a.f64_images if a.f64_images is not None else (n_loop if nparams <= 2_000_000 else 16))
    if "f64" not in set(a.skip.split(",")) and ref is not None and n64 > 0:
        f64_check(res, model, engine, x, y, ref, n64, bs, vbs, a, say)
    res["loadavg"].append(round(os.getloadavg()[0], 2))
    for k in ("reference_loop_ips", "vmap_ips", "limit_ips"):
        if "ours_ips" in res and res.get(k):
            res["ours_over_" + k[:-4]] = res["ours_ips"] / res[k]
            say(f"ours / {k[:-4]:14s} {res['ours_over_' + k[:-4]]:6.2f}x")
    if a.json:
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()}))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
