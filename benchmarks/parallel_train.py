"""Would reproduce.py's train stage be faster training two models at once, one thread each?

    python benchmarks/parallel_train.py --model wrn16-1 --images 3000 --json

Times, side by side in one run on random Fashion-MNIST-sized images (1x28x28) with the project's
training loop: two models trained one after the other in this process with all threads, against
the same two models trained at the same time in two processes with one thread each. Prints the
wall time of each and the speed-up; --json prints one JSON object last.
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from network import get_model  # noqa: E402
from ownership.data import ImageSet  # noqa: E402
from ownership.training import train  # noqa: E402


def one(arch, n, seed, threads):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    images = ImageSet(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)])
    torch.manual_seed(seed)
    train(get_model(arch, 10, 1), images, "fmnist", epochs=1, lr=0.1, batch=128, device="cpu", desc=f"seed {seed}")


def main(args):
    threads = torch.get_num_threads()
    one(args.model, 256, 99, threads)  # warm-up
    start = time.time()
    for seed in (0, 1):
        one(args.model, args.images, seed, threads)
    sequential = time.time() - start
    ctx = mp.get_context("spawn")
    start = time.time()
    procs = [ctx.Process(target=one, args=(args.model, args.images, seed, 1)) for seed in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    parallel = time.time() - start
    out = dict(model=args.model, images=args.images, threads=threads, sequential_s=round(sequential, 2),
               parallel_1_thread_s=round(parallel, 2), speedup=round(sequential / parallel, 2),
               loadavg=list(os.getloadavg()[:1]))
    print(f"{args.model}: 2 models one after the other with {threads} threads {sequential:.1f} s; "
          f"at once, 1 thread each {parallel:.1f} s (includes process start-up); speed-up {sequential / parallel:.2f}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wrn16-1")
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--json", action="store_true")
    main(p.parse_args())
