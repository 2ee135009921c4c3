"""One --seed seeds everything: every model's initialisation seed is derived from it and a name."""
import hashlib

import torch


def derive(seed, *names):
    """A stable 31-bit seed from the experiment seed and names (e.g. derive(0, 'benign', 'wrn16-1'))."""
    h = hashlib.sha256("/".join([str(seed), *map(str, names)]).encode()).hexdigest()
    return int(h[:8], 16) & 0x7FFFFFFF


def rng_state(device):
    """The global random state that dropout draws from (the CPU's, and the device's on CUDA), for
    resumable training states."""
    cuda = torch.device(device).type == "cuda"
    return dict(cpu=torch.get_rng_state(), cuda=torch.cuda.get_rng_state(device) if cuda else None)


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
