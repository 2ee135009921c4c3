"""Atomic save and safe load of checkpoints.

A checkpoint is a dict: {"state_dict", "arch", "num_classes", "in_channels", "dataset", "preset",
"metrics", ...}. Every load goes through `load_checkpoint`, which uses torch.load(weights_only=True):
a suspect checkpoint comes from the suspected thief, and unpickling it must never run its code.
"""
import os
import pickle
import tempfile
import zipfile

import torch

from network import get_model

from . import distributed
from .errors import UserError


def atomic_write(path, write):
    """Call write(tmp_path), then rename into place: an interrupted write leaves no half file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-",
                               suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(path, obj):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path, what="checkpoint", made_by=None):
    """Load a dict (or a bare state_dict) with weights_only=True, or raise a one-line UserError."""
    hint = f"; make it with '{made_by}'" if made_by else ""
    if not os.path.exists(path):
        raise UserError(f"{what} {path} does not exist{hint}")
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{path} is not a plain weights checkpoint and was refused without running it "
                        f"({first[:120]}); ask for the state_dict or a .safetensors file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"{path} is truncated or corrupt ({e.__class__.__name__}: {str(e)[:100]}); "
                        f"copy it again{hint}") from None
    if isinstance(obj, dict) and "state_dict" not in obj and all(torch.is_tensor(v) for v in obj.values()):
        obj = {"state_dict": obj}
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise UserError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict with a 'state_dict'")
    return obj


def _load_safetensors(path):
    """A .safetensors file: tensors only, so nothing in it can run. Its metadata may record
    arch, num_classes and in_channels (strings, as safetensors stores them)."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise UserError(f"{path} is a .safetensors file; install the 'safetensors' package to read it") from None
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            ck = {"state_dict": {k: f.get_tensor(k) for k in f.keys()}}
    except Exception as e:
        raise UserError(f"{path} is truncated or corrupt ({e.__class__.__name__}: {str(e)[:100]}); "
                        f"copy it again") from None
    for key in ("arch", "num_classes", "in_channels", "dataset"):
        if key in meta:
            ck[key] = meta[key]
    for key in ("num_classes", "in_channels"):
        if key in ck:
            if not ck[key].isdigit():
                raise UserError(f"{path}: metadata {key}={ck[key]!r} is not a whole number; fix or drop it")
            ck[key] = int(ck[key])
    return ck


def load_model(path, arch=None, num_classes=None, in_channels=None, device="cpu", what="model", made_by=None):
    """Build the architecture and load weights. `arch`/`num_classes` given by the user must match the
    checkpoint's own record; a bare state_dict needs them."""
    ck = load_checkpoint(path, what, made_by)
    for key, want in (("arch", arch), ("num_classes", num_classes)):
        have = ck.get(key)
        if want is not None and have is not None and want != have:
            raise UserError(f"{path} is a {key}={have} checkpoint but {want} was asked for; "
                            f"pass --model {ck.get('arch')} (or the matching --num_classes)")
    broken = next((k for k, v in ck["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken:
        raise UserError(f"{path} has NaN or Inf in its weights ({broken}); the checkpoint is broken or its "
                        f"training diverged: retrain it or ask for another copy")
    arch = ck.get("arch", arch)
    num_classes = ck.get("num_classes", num_classes)
    in_channels = ck.get("in_channels", in_channels)
    if arch is None or num_classes is None:
        raise UserError(f"{path} is a bare state_dict; give its architecture with --model and --num_classes")
    model = get_model(arch, num_classes, in_channels or 3)
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit {arch} with {num_classes} classes and {in_channels} "
                        f"input channels ({str(e).splitlines()[0][:120]}); check --model/--num_classes") from None
    model.to(device).eval()
    return model, ck


def model_record(model, arch, num_classes, in_channels, dataset, **extra):
    """The checkpoint dict for a trained model."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return dict(state_dict=sd, arch=arch, num_classes=num_classes, in_channels=in_channels,
                dataset=dataset, **extra)


def training_state(out, resume, stages=1):
    """Path of the per-epoch training state next to checkpoint `out` (<out>.state, then <out>.state2 ...
    for later stages). Without `resume`, states left by an earlier run are discarded."""
    state = out + ".state"
    if not resume and distributed.is_main():
        remove(state, *[f"{state}{k}" for k in range(2, stages + 1)])
    distributed.barrier()
    return state


def remove(*files):
    for f in files:
        if os.path.exists(f):
            os.remove(f)
