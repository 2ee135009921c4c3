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


def send_to_main(obj):
    """On a rank other than 0: pickle `obj` and send it to rank 0, which takes it with receive_from."""
    dist.send_object_list([obj], dst=0)


def receive_from(src):
    """On rank 0: the object that rank `src` sent with send_to_main. Receiving rank by rank holds one
    rank's object (and its pickled bytes) at a time, not the whole gathered set."""
    box = [None]
    dist.recv_object_list(box, src=src)
    return box[0]


def shard(n):
    """This rank's contiguous slice of range(n)."""
    r, w = rank(), world()
    per = (n + w - 1) // w
    return slice(min(n, r * per), min(n, (r + 1) * per))
