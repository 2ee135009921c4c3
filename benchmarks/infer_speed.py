"""Forward passes without gradients (accuracy, black-box queries, soft labels), images/s, side by side.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/infer_speed.py --json
    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 python benchmarks/infer_speed.py --json

Random 1x28x28 uint8 images (--images), untrained models (--models), float32, eval mode. Settings,
each timed --rounds times in turn (A, B, C, ..., A, B, C, ...) and reported as the median:
  contiguous-b512        the previous pass: contiguous model and input, batch 512 (training.predict before)
  contiguous-b256        the same at batch 256 (blackbox.model_probs before)
  input-cl-b<B>          only the input in channels_last, batch B
  softmax-b<B>           ownership.training.softmax (model and input in channels_last) at batch B; the
                         default batch is training.INFER_BATCH
Ratios are images/s against contiguous-b512 (> 1 is faster). --json prints one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from network import get_model  # noqa: E402
from ownership.data import normalise  # noqa: E402
from ownership.training import INFER_BATCH, softmax  # noqa: E402


@torch.no_grad()
def plain(model, x, batch, input_cl):
    """The previous pass: the model as it is, the input contiguous or channels_last."""
    model.eval()
    for i in range(0, len(x), batch):
        xb = normalise(x[i:i + batch], "fmnist", "cpu")
        if input_cl:
            xb = xb.contiguous(memory_format=torch.channels_last)
        F.softmax(model(xb).float(), 1)


def main(args):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.images, 1, 28, 28), dtype=torch.uint8)
    out = dict(threads=torch.get_num_threads(), images=args.images, rounds=args.rounds, default_batch=INFER_BATCH,
               models={})
    for name in args.models:
        model = get_model(name, 10, 1)
        settings = {"contiguous-b512": lambda: plain(model, x, 512, False),
                    "contiguous-b256": lambda: plain(model, x, 256, False)}
        for b in args.batches:
            settings[f"input-cl-b{b}"] = lambda b=b: plain(model, x, b, True)
            settings[f"softmax-b{b}"] = lambda b=b: softmax(model, x, "fmnist", "cpu", b)
        times = {k: [] for k in settings}
        for f in settings.values():  # warm-up
            f()
        for _ in range(args.rounds):
            for k, f in settings.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        ips = {k: args.images / statistics.median(v) for k, v in times.items()}
        base = ips["contiguous-b512"]
        out["models"][name] = {k: dict(images_per_s=round(v), ratio=round(v / base, 2)) for k, v in ips.items()}
        for k, v in ips.items():
            print(f"{name} {k:18s} {v:8.0f} img/s  {v / base:.2f}x", file=sys.stderr)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["wrn16-1", "wrn10-1"])
    p.add_argument("--images", type=int, default=2560)
    p.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    main(p.parse_args())
