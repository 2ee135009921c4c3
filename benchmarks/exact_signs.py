"""Can the engine match the float32 batch-1 loop's signs exactly? Tries every conv method with the
forward channels-last or not, and with oneDNN on or off (off, a batched convolution runs PyTorch's own
im2col path, as the loop's batch-1 convolutions on small maps do).

    python benchmarks/exact_signs.py [--model wrn16-1] [--images 128]

Prints images/s and sign mismatches against ownership.gradients.reduced_grads_loop for each setting
(the model and images of benchmarks/grad_throughput.py, with another image seed).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grad_throughput import make_model  # noqa: E402
from ownership.gradients import CONV_METHODS, GradientEngine, reduced_grads_loop  # noqa: E402


def main(args):
    model = make_model(args.model, 3, 10, 32, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.images, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.images,), generator=g)
    t = time.perf_counter()
    ref = reduced_grads_loop(model, x, y)
    print(f"loop: {args.images / (time.perf_counter() - t):.0f} images/s")
    for onednn in (True, False):
        for cl in (True, False):
            for method in ["auto"] + list(CONV_METHODS):
                eng = GradientEngine(model, conv_method=method, channels_last=cl)
                with torch.backends.mkldnn.flags(enabled=onednn):
                    eng(x[:8], y[:8])
                    best = float("inf")
                    for _ in range(3):
                        t = time.perf_counter()
                        out = eng(x, y)
                        best = min(best, time.perf_counter() - t)
                mism = int((torch.sign(out) != torch.sign(ref)).sum())
                print(f"oneDNN {'on ' if onednn else 'off'}  channels_last {str(cl):5}  {method:8}  "
                      f"{args.images / best:6.0f} images/s  sign mismatches {mism}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wrn16-1")
    p.add_argument("--images", type=int, default=128)
    main(p.parse_args())
