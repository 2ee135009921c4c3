"""Gradient sets on disk: a model's white-box feature vectors on the transformed set (gradient signs,
input gradients or stylised log-losses; constants.WHITE_BOX), collected (under torchrun, each rank a shard of the rows) and
written to gradients_set/<model file>/<data folder>/g_f.npy (g_x.npy, g_l.npy: features.FEATURES),
with what made them in g_f.json (g_x.json, g_l.json), and read back memory-mapped. The computation
itself is ownership/gradients.py.
"""
import json
import math
import os

import numpy as np

from . import distributed as dd
from . import jsonio, paths
from .checkpoints import atomic_write, load_model
from . import data
from .errors import UserError
from .features import FEATURES
from .gradients import AUG_BLOCK, white_box_dim, white_box_features
from .presets import DATASETS


def shard_rows(n, batch_size):
    """This rank's rows of n images under torchrun (all of them otherwise): a contiguous run of whole
    units of lcm(AUG_BLOCK, batch_size) images, so each image gets the same transform and the same
    batch as in one process, and its signs are the same bit for bit."""
    unit = math.lcm(AUG_BLOCK, batch_size)
    units = dd.shard(-(-n // unit))
    return slice(min(n, units.start * unit), min(n, units.stop * unit))


def collect(model_path, dataset, data_dir, grad_dir, gamma=0.1, split="train", arch=None, num_classes=None,
            device="cpu", batch_size=128, augment=True, seed=0, out_path=None, feature="weight-signs"):
    """White-box features (`feature`, constants.WHITE_BOX) of checkpoint `model_path` on the transformed
    set, written (atomically, streamed through a memory map) to gradients_set/<model file>/<data
    folder>/g_f.npy (g_x.npy, g_l.npy), and what made them to meta_path() of it. Returns the path."""
    d = DATASETS[dataset]
    model, ck = load_model(model_path, arch, num_classes or d["num_classes"], d["channels"], device,
                           made_by=f"python reproduce.py --preset {d['preset']}",
                           flags={"arch": "--model", "num_classes": "--num_classes"})
    images = data.load_styled(data_dir, dataset, gamma, split)
    originals = data.originals(images, dataset, data_dir, split) if FEATURES[feature].originals else None
    out_path = out_path or paths.gradient_set(grad_dir, model_path, paths.styled_dir(data_dir, dataset, gamma), split,
                                           feature)

    # under torchrun each rank computes a contiguous shard of the rows; rank 0 streams its own into
    # the file, then receives the other ranks' rows one rank at a time, and alone writes
    rows = shard_rows(len(images), batch_size)

    def features(out=None):
        return white_box_features(model, images, dataset, device, feature, batch_size, augment, seed, out=out,
                                  desc=f"gradients {os.path.basename(model_path)}", rows=rows, progress=dd.is_main(),
                                  originals=originals)

    if not dd.is_main():
        dd.send_to_main((rows.start, features()))
        return out_path

    dim = white_box_dim(model, feature, dataset)

    def write(tmp):
        arr = np.lib.format.open_memmap(tmp, mode="w+", shape=(len(images), dim),
                                         dtype=FEATURES[feature].dtype)
        features(arr[rows])
        for r in range(1, dd.world()):
            start, g = dd.receive_from(r)
            arr[start:start + len(g)] = g
        arr.flush()
        del arr

    atomic_write(out_path, write)
    meta = dict(model=os.path.abspath(model_path), arch=ck.get("arch", arch), dataset=dataset, split=split,
                n=len(images), dim=dim, feature=feature, augment=augment, seed=seed)
    jsonio.write(meta_path(out_path), meta)
    return out_path


def meta_path(set_path):
    """What made a gradient set: g_f.npy -> g_f.json (model, arch, dataset, split, n, dim, feature,
    augment, seed)."""
    return os.path.splitext(set_path)[0] + ".json"


def load_meta(set_path):
    """The record of meta_path(set_path), or {} for a set made without one (by another tool)."""
    path = meta_path(set_path)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_set(path, made_by=None):
    """A gradient set (g_f.npy, g_x.npy, g_l.npy), memory-mapped."""
    if not os.path.exists(path):
        raise UserError(f"gradient set {path} does not exist; make it with '{made_by or 'python gradientset.py --m <model>'}'")
    try:
        return np.load(path, mmap_mode="r")
    except Exception as e:
        raise UserError(f"gradient set {path} is corrupt ({e.__class__.__name__}); delete it and rerun "
                        f"'{made_by or 'python gradientset.py'}'") from None
