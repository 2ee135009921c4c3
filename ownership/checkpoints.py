"""Atomic save and safe load of checkpoints.

A checkpoint is a dict: {"state_dict", "arch", "num_classes", "in_channels", "dataset", "preset",
"metrics", ...}. Every load goes through `load_checkpoint`, which uses torch.load(weights_only=True):
a suspect checkpoint comes from the suspected thief, and unpickling it must never run its code.
"""
import os
import pickle
import sys
import tempfile
import zipfile

import torch

from network import MODELS, get_model

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
    """Load a dict (or a bare state_dict) with weights_only=True, or raise a one-line UserError.

    Accepted layouts: the product's {"state_dict": sd, "arch", "num_classes", ...}; a bare state_dict
    {name: tensor}; and training-script checkpoints with the weights under another key, e.g.
    {"model": sd, "optimizer": ..., "epoch": ...}, {"net": sd, "acc": ...}, {"model_state_dict": sd}
    (searched two levels deep). Those come back as the product's layout with "_weights_key" set to the
    key used; several candidates are kept under "_candidates" for load_model to pick the one that fits.
    """
    hint = f"; make it with '{made_by}'" if made_by else ""
    if not os.path.exists(path):
        raise UserError(f"{what} {path} does not exist{hint}")
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    other = not_a_checkpoint(path)
    if other:
        raise UserError(f"{path} is {other}, not a PyTorch checkpoint; get the model's own file again (a .pt/.pth "
                        f"made by torch.save, or a .safetensors file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{path} is not a plain weights checkpoint and was refused without running it "
                        f"({first[:120]}); ask its owner for the state_dict (torch.save(model.state_dict(), f)) or a "
                        f".safetensors file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"{path} is truncated or corrupt ({e.__class__.__name__}: {str(e)[:100]}); "
                        f"copy it again{hint}") from None
    if _is_tensor_dict(obj) and "state_dict" not in obj:
        return {"state_dict": obj}
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict with a 'state_dict'; "
                        f"{resave_snippet(path)}")
    if _is_tensor_dict(obj.get("state_dict")):
        return obj
    found = _tensor_dicts(obj)
    if not found:
        raise UserError(f"{path} holds a dict with keys {_key_list(obj)} and none of them is a state_dict "
                        f"(a dict of tensors); {resave_snippet(path)}")
    ck = {k: v for k, v in obj.items() if not isinstance(v, dict)}  # arch, num_classes, epoch ...
    if len(found) == 1:
        (key, sd), = found.items()
        ck.update(state_dict=sd, _weights_key=key)
    else:
        ck["_candidates"] = found
    return ck


def _is_tensor_dict(obj):
    return isinstance(obj, dict) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def _tensor_dicts(obj, depth=2, prefix=""):
    """{dotted key: state_dict} of the non-empty tensor dicts within `depth` levels of dict `obj`."""
    out = {}
    for k, v in obj.items():
        if _is_tensor_dict(v):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, dict) and depth > 1:
            out.update(_tensor_dicts(v, depth - 1, f"{prefix}{k}."))
    return out


def _key_list(d, n=8):
    keys = [repr(k) for k in d]
    return "[" + ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "") + "]"


MAGIC = [  # (leading bytes, what the file is): files passed as a checkpoint that are none
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"), (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights?)"),
    (b"version https://git-lfs", "a Git LFS pointer, not the file itself (fetch it with git lfs pull)"),
]


def not_a_checkpoint(path):
    """What the file at `path` is when it is plainly no PyTorch checkpoint (neither torch.save's zip
    nor its legacy pickle): 'empty', 'an HTML page ...', 'a PNG image', 'text' ...; None otherwise.
    Reads the first 512 bytes only."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "empty (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip, or a (legacy) pickle
        return None
    for magic, what in MAGIC:
        if head.startswith(magic):
            return what
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in low:
        return "an HTML page (a failed download? e.g. a login or error page)"
    if low.startswith((b"{", b"[")):
        return "JSON text"
    try:
        head.decode("utf-8")
        return "text" if b"\x00" not in head else None
    except UnicodeDecodeError:
        return None


def resave_snippet(path, key=None):
    """Python lines (not a shell command: the file name is untrusted) that re-save the weights under
    `key` of the checkpoint at `path` as a bare state_dict next to it, read with weights_only=True;
    without a usable key, what to ask the file's owner for."""
    out = os.path.splitext(path)[0] + "-state_dict.pt"
    if key is None or len(repr(key)) > 80:
        return "ask its owner for the state_dict (torch.save(model.state_dict(), f)) or a .safetensors file"
    get = "".join(f"[{k!r}]" for k in key.split("."))
    return (f"in Python: import torch; torch.save(torch.load({path!r}, weights_only=True){get}, {out!r})")


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


def load_model(path, arch=None, num_classes=None, in_channels=None, device="cpu", what="model", made_by=None,
               flags=None, classes_hint=None):
    """Build the architecture and load weights; returns (model in eval mode on `device`, checkpoint dict).

    `arch`/`num_classes` given by the caller must match the checkpoint's own record; a bare state_dict
    needs `arch`. An `arch` recorded under a name this project does not know is replaced by the
    caller's `arch` (checked against the weights). `num_classes=None` takes the record, else the size
    of the weights' classifier head. Wrapper prefixes shared by every key ('module.' of
    DataParallel/DDP, '_orig_mod.' of torch.compile, ...) are stripped when that makes the weights fit,
    with a note on stderr; so is the choice among weights nested under another key (load_checkpoint).

    `flags`: the calling script's options for the architecture and the class count, e.g.
    {"arch": "--model", "num_classes": "--num_classes"}; messages suggest only these.
    `classes_hint`: what to do when the class count differs and the script has no option for it.
    """
    flags = flags or {}
    ck = load_checkpoint(path, what, made_by)
    in_channels = ck.get("in_channels", in_channels) or 3
    have = ck.get("arch")
    if have is not None and have not in MODELS:
        if arch is None:
            fit = _what_fits(_first_sd(ck), ck.get("num_classes") or num_classes, in_channels)
            name = fit[0] if fit else "<name>"
            how = (f"pass {flags['arch']} {name} to read its weights as that architecture" if "arch" in flags
                   else "re-save it with one of the known names as its 'arch'")
            fits = f"; its weights fit {fit[0]} with {fit[1]} classes" if fit else "; its weights fit none of them"
            raise UserError(f"{path} records the architecture {have!r}, which this project does not know (known: "
                            f"{', '.join(MODELS)}){fits}; {how}")
        _note(f"{path} records the architecture {have!r}, unknown here; reading its weights as "
              f"{flags.get('arch', 'arch')} {arch}")
        have = None
    if arch is not None and have is not None and arch != have:
        flag = flags.get("arch")
        fix = f"drop {flag} or pass {flag} {have}" if flag else "use a checkpoint of that architecture"
        raise UserError(f"{path} is an arch={have} checkpoint but {flag + ' ' if flag else ''}{arch} was asked "
                        f"for; {fix}")
    arch = have or arch
    have_n = ck.get("num_classes")
    if num_classes is not None and have_n is not None and num_classes != have_n:
        raise UserError(_classes_message(path, have_n, num_classes, flags, classes_hint))
    if arch is None:
        fit = _what_fits(_first_sd(ck), have_n or num_classes, in_channels)
        guess = f" (its weights fit {fit[0]})" if fit else ""
        how = (f"give its architecture with {flags['arch']} <name>{guess}" if "arch" in flags else
               f"this script needs a checkpoint that records its 'arch'{guess}")
        raise UserError(f"{path} is a bare state_dict (no architecture recorded); {how}")
    num_classes = have_n or num_classes
    if num_classes is None:  # from the classifier head of the weights
        fit = _what_fits(_first_sd(ck), None, in_channels, [arch])
        num_classes = fit[1] if fit else None
        if num_classes is None:
            raise UserError(f"{path}: cannot tell the number of classes of its {arch} weights; they do not fit {arch}")
    model = get_model(arch, num_classes, in_channels)
    sd, key, prefix = _choose_weights(path, ck, model, arch, num_classes, in_channels, flags, classes_hint)
    broken = next((k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken:
        raise UserError(f"{path} has NaN or Inf in its weights ({broken}); the checkpoint is broken or its "
                        f"training diverged: retrain it or ask for another copy")
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:  # same names and shapes, so this is rare (e.g. a dtype that cannot be copied)
        raise UserError(f"{path}: weights do not load into {arch} ({str(e).splitlines()[0][:160]})") from None
    if key:
        _note(f"{path}: no 'state_dict' entry; using the weights under {key!r}")
    if prefix:
        _note(f"{path}: stripped the prefix {prefix!r} that every weight name carries (a wrapper such as "
              f"DataParallel/DDP 'module.' or torch.compile '_orig_mod.')")
    ck = dict(ck, state_dict=sd, arch=arch, num_classes=num_classes, in_channels=in_channels)
    ck.pop("_candidates", None)
    model.to(device).eval()
    return model, ck


def _note(msg):
    print(f"note: {msg}", file=sys.stderr)


def _first_sd(ck):
    return ck["state_dict"] if "state_dict" in ck else next(iter(ck["_candidates"].values()))


def _classes_message(path, have, want, flags, hint):
    return f"{path} has {have} output classes but {want} are used here; {_classes_advice(have, flags, hint)}"


def _classes_advice(have, flags, hint):
    if "num_classes" in flags:
        return f"pass {flags['num_classes']} {have} if that is meant"
    return hint or "it is a model of another task: use a checkpoint with the dataset's classes"


def _mismatch(sd, model_sd):
    """(missing, unexpected, wrong shape) names between the weights `sd` and a model's state_dict."""
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    wrong = [k for k in sd if k in model_sd and tuple(sd[k].shape) != tuple(model_sd[k].shape)]
    return missing, unexpected, wrong


def _strip_prefix(sd, model_sd):
    """(sd, prefix): the weights with the dotted prefix that every key shares removed, the shortest one
    that makes the names the model's; (sd, "") unchanged when the names fit already or nothing does."""
    if set(sd) == set(model_sd):
        return sd, ""
    parts = [k.split(".") for k in sd]
    n = 0
    while all(len(p) > n + 1 and p[n] == parts[0][n] for p in parts):
        n += 1
    for j in range(1, n + 1):
        prefix = ".".join(parts[0][:j]) + "."
        stripped = {k[len(prefix):]: v for k, v in sd.items()}
        if set(stripped) == set(model_sd):
            return stripped, prefix
    return sd, ""


def _choose_weights(path, ck, model, arch, num_classes, in_channels, flags, classes_hint):
    """(state_dict, key it came from or None, stripped prefix) of the one candidate that fits `model`,
    or a UserError naming what does not fit and what would."""
    model_sd = model.state_dict()
    cands = ck.get("_candidates") or {ck.get("_weights_key"): ck["state_dict"]}
    fitting = []
    for key, sd in cands.items():
        sd2, prefix = _strip_prefix(sd, model_sd)
        if not any(_mismatch(sd2, model_sd)):
            fitting.append((sd2, key, prefix))
    if len(fitting) == 1:
        return fitting[0]
    if len(fitting) > 1:
        keys = [k for _, k, _ in fitting]
        raise UserError(f"{path} holds {len(keys)} state_dicts that fit {arch} ({', '.join(map(repr, keys))}); "
                        f"re-save the one to verify alone, e.g. {resave_snippet(path, keys[0])}")
    if len(cands) > 1:
        raise UserError(f"{path} holds state_dicts under {', '.join(map(repr, cands))} and none fits {arch} with "
                        f"{num_classes} classes; re-save the suspect's weights alone, e.g. "
                        f"{resave_snippet(path, next(iter(cands)))}")
    key, sd = next(iter(cands.items()))
    sd2, _ = _strip_prefix(sd, model_sd)
    missing, unexpected, wrong = _mismatch(sd2, model_sd)

    def few(names, n=3):
        return ", ".join(names[:n]) + (f" ... +{len(names) - n}" if len(names) > n else "")

    parts = [f"{len(missing)} missing ({few(missing)})" if missing else "",
             f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
             f"{len(wrong)} of wrong shape ({few([f'{k} {_shape(sd2[k])} vs {_shape(model_sd[k])}' for k in wrong], 2)})"
             if wrong else ""]
    where = f" (under {key!r})" if key else ""
    msg = (f"{path}: weights{where} do not fit {arch} with {num_classes} classes and {in_channels} input "
           f"channel(s): {'; '.join(p for p in parts if p)} [file vs model]")
    fit = _what_fits(sd, None, in_channels)
    if fit and fit[0] == arch and fit[1] != num_classes:
        raise UserError(f"{msg}; they are {arch} weights with {fit[1]} output classes: "
                        f"{_classes_advice(fit[1], flags, classes_hint)}")
    if fit:
        fix = f": pass {flags['arch']} {fit[0]}" if "arch" in flags and fit[1] == num_classes else ""
        raise UserError(f"{msg}; they fit {fit[0]} with {fit[1]} classes{fix}")
    raise UserError(f"{msg}; they fit none of the known architectures ({', '.join(MODELS)}) with {in_channels} "
                    f"input channel(s): ask for a checkpoint of one of them")


def _shape(t):
    return "x".join(map(str, t.shape)) or "scalar"


def _what_fits(sd, num_classes, in_channels, archs=None):
    """(arch, num_classes) of the first known architecture whose weights have the names and shapes of
    `sd` (after stripping a wrapper prefix), trying `num_classes` and the size of the classifier head;
    None if none fits. Built on the meta device: no memory, no time."""
    for arch in archs or MODELS:
        try:
            with torch.device("meta"):
                model_sd = get_model(arch, num_classes or 10, in_channels).state_dict()
        except Exception:
            continue
        sd2, _ = _strip_prefix(sd, model_sd)
        missing, unexpected, wrong = _mismatch(sd2, model_sd)
        if missing or unexpected:
            continue
        if not wrong:
            return arch, num_classes or 10
        head = [k for k in wrong if sd2[k].dim() >= 1 and model_sd[k].shape[1:] == sd2[k].shape[1:]]
        if len(head) == len(wrong) and len({sd2[k].shape[0] for k in head}) == 1:
            n = sd2[head[0]].shape[0]
            with torch.device("meta"):
                if not any(_mismatch(sd2, get_model(arch, n, in_channels).state_dict())):
                    return arch, n
    return None


class FirstOutputs(torch.nn.Module):
    """The first `k` logits (B, k) of `model`, whose output is (B, K >= k): a suspect fine-tuned with
    extra classes, queried black-box on the dataset's k classes (softmax over those k logits)."""

    def __init__(self, model, k):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x):
        return self.model(x)[:, :self.k]


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
