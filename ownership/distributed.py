"""torchrun / DistributedDataParallel, or a single process when not launched by torchrun.

    torchrun --standalone --nproc_per_node=4 train_model.py --role victim --preset cifar10

`setup(device)` joins the process group that torchrun describes in the environment (NCCL on CUDA,
gloo on the CPU) and returns the device of this rank. Only rank 0 writes files and prints results.
"""
import os

import torch
import torch.distributed as dist


def launched():
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device):
    """Initialise the process group once if torchrun launched us; returns this rank's device."""
    if not launched():
        return device
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
    if torch.device(device).type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world():
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main():
    return rank() == 0


def barrier():
    if dist.is_initialized():
        dist.barrier()


def mean(value, device):
    """All-reduced mean of a float over ranks."""
    if not dist.is_initialized():
        return float(value)
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t)
    return t.item() / world()


def gather_to_main(obj):
    """[object of rank 0, of rank 1, ...] on rank 0 and None on the others ([obj] without torchrun).

    dist.gather_object pickles each object and the parts arrive at rank 0 together: rank 0 holds all
    other ranks' parts at once (plus their pickled bytes while unpickling); rank 0 can pass None and
    keep its own part where it is. Fine for the gradient sets here (int8: 50k images x 5178 values
    of WRN-28-10 are 259 MB); a set that does not fit in memory would need point-to-point sends of
    tensors, one rank at a time."""
    if not dist.is_initialized():
        return [obj]
    parts = [None] * world() if is_main() else None
    dist.gather_object(obj, parts, dst=0)
    return parts


def shard(n):
    """This rank's contiguous slice of range(n)."""
    r, w = rank(), world()
    per = (n + w - 1) // w
    return slice(min(n, r * per), min(n, (r + 1) * per))
