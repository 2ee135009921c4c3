"""Time one training epoch on random data: fp32 against bf16 autocast, both channels_last.

    python benchmarks/train_epoch.py --model wrn28-10 --images 10000 --device cuda --json
    python benchmarks/train_epoch.py --model wrn28-10 --images 10000 --device cuda --json --deterministic
    python benchmarks/train_epoch.py --model wrn16-1 --dataset fmnist --images 6000 --device cpu --json

Uses the project's training loop (ownership.training.train) on uint8 random images of --dataset's
shape (cifar10: 3x32x32, fmnist: 1x28x28), so the numbers
include its augmentation and schedule. cuDNN autotunes as in the pipeline (cli.get_device), or, with
--deterministic, uses the deterministic kernels of the scripts' --deterministic (cli.make_deterministic).
Prints images/s per setting; --json prints one JSON object last.
"""
import argparse
import json
import sys
import time
import os

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from network import get_model  # noqa: E402
from ownership import cli  # noqa: E402
from ownership.data import ImageSet  # noqa: E402
from ownership.presets import DATASETS  # noqa: E402
from ownership.training import cpu_has_bf16, train  # noqa: E402


def main(args):
    device = torch.device(args.device)
    if args.deterministic:
        cli.make_deterministic()
    else:
        torch.backends.cudnn.benchmark = True
    g = torch.Generator().manual_seed(0)
    d = DATASETS[args.dataset]
    images = ImageSet(torch.randint(0, 256, (args.images, d["channels"], d["size"], d["size"]), dtype=torch.uint8,
                                    generator=g),
                      torch.randint(0, 10, (args.images,), generator=g), [str(i) for i in range(10)])
    out = dict(model=args.model, dataset=args.dataset, threads=torch.get_num_threads(), cpu_bf16=cpu_has_bf16(), device=str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
               images=args.images, batch=args.batch, deterministic=args.deterministic)
    for name, amp in (("fp32", "none"), ("bf16", "bf16")):  # both channels_last (the loop always is)
        torch.manual_seed(0)
        model = get_model(args.model, 10, d["channels"])
        # warm-up on a few batches (cuDNN autotuning, allocator)
        train(model, images.subset(range(min(len(images), 4 * args.batch))), args.dataset, epochs=1, lr=0.1,
              batch=args.batch, device=device, amp=amp, desc="warm-up")
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.time()
        train(model, images, args.dataset, epochs=1, lr=0.1, batch=args.batch, device=device, amp=amp, desc=name)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - start
        out[f"{name}_epoch_s"] = round(dt, 2)
        out[f"{name}_ips"] = round(args.images / dt, 1)
        print(f"{args.model} {name}: {dt:.2f} s for {args.images} images ({args.images / dt:.0f} images/s)")
    out["bf16_speedup"] = round(out["fp32_epoch_s"] / out["bf16_epoch_s"], 2)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wrn28-10")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "fmnist"], help="image shape and normalisation")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")
    p.add_argument("--deterministic", action="store_true", help="deterministic cuDNN/cuBLAS kernels")
    main(p.parse_args())
