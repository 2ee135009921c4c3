"""Datasets as in-memory uint8 tensors (N, C, H, W), decoded once, with batched augmentation.

Sources, tried in order:
  fmnist    /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist), <data-dir>/FashionMNIST/raw,
            then torchvision's download into <data-dir>
  cifar10   <data-dir>/cifar10/{train,test}/<class>/* (the reference layout), then torchvision's
            CIFAR10 (download) into <data-dir>
  imagenet  <data-dir>/sub-imagenet-20/{train,val,test}/<class>/*
Transformed (stylised) sets live in <data-dir>/<prefix>_seurat_10%/{train,test}/<class>/<index>.png.
"""
import gzip
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import paths, seeds
from .errors import UserError
from .natural_images import natural_images
from .presets import DATASETS

FMNIST_SYSTEM = "/usr/share/datasets/fashion-mnist"
FMNIST_CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")  # read in any case: .PNG, .JPEG, .Jpg ...
# Image formats that read_folder does not read: a file with one of these in a class folder is an error
# (converting it keeps the folder whole); any other file there is skipped with a warning naming it.
OTHER_IMAGE_EXTS = (".tif", ".tiff", ".gif", ".heic", ".heif", ".avif", ".ppm", ".pgm", ".pbm", ".jp2", ".ico")


class ImageSet:
    """x: uint8 (N, C, H, W); y: int64 (N,); classes: list of names; idx: original indices."""

    def __init__(self, x, y, classes, idx=None):
        self.x, self.y, self.classes = x, y, list(classes)
        self.idx = torch.arange(len(y)) if idx is None else idx

    def __len__(self):
        return len(self.y)

    def subset(self, sel):
        sel = torch.as_tensor(sel, dtype=torch.long)
        return ImageSet(self.x[sel], self.y[sel], self.classes, self.idx[sel])

    @staticmethod
    def cat(a, b):
        return ImageSet(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), a.classes, torch.cat([a.idx, b.idx]))


# ----------------------------------------------------------------------------- raw datasets
def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated ({arr.size} of {int(np.prod(shape))} values); "
                        f"reinstall it (apt-get install --reinstall dataset-fashion-mnist)")
    return arr.reshape(shape)


def _fmnist_file(data_dir, stem):
    for folder in (FMNIST_SYSTEM, os.path.join(data_dir, "FashionMNIST", "raw"), os.path.join(data_dir, "fmnist")):
        for name in (stem + ".gz", stem):
            if os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
    return None


def _load_fmnist(data_dir):
    stems = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    if any(_fmnist_file(data_dir, s) is None for pair in stems.values() for s in pair):
        try:
            import torchvision
            torchvision.datasets.FashionMNIST(data_dir, train=True, download=True)
            torchvision.datasets.FashionMNIST(data_dir, train=False, download=True)
        except Exception as e:
            raise UserError(f"Fashion-MNIST not found in {FMNIST_SYSTEM} or {data_dir}/FashionMNIST/raw and "
                            f"the download failed ({e.__class__.__name__}); install it with "
                            f"'apt-get install -y dataset-fashion-mnist'") from None
    out = {}
    for split, (xi, yi) in stems.items():
        x = torch.from_numpy(_read_idx(_fmnist_file(data_dir, xi)).copy()).unsqueeze(1)
        y = torch.from_numpy(_read_idx(_fmnist_file(data_dir, yi)).astype(np.int64))
        out[split] = ImageSet(x, y, FMNIST_CLASSES)
    return out


def _load_cifar10(data_dir):
    folder = os.path.join(data_dir, "cifar10")
    if os.path.isdir(os.path.join(folder, "train")):
        return {s: read_folder(os.path.join(folder, s), 3, 32) for s in ("train", "test")}
    try:
        import torchvision
        out = {}
        for split in ("train", "test"):
            ds = torchvision.datasets.CIFAR10(data_dir, train=split == "train", download=True)
            out[split] = ImageSet(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                                  torch.tensor(ds.targets), ds.classes)
        return out
    except Exception as e:
        raise UserError(f"CIFAR-10 not found at {folder}/{{train,test}} and the torchvision download into "
                        f"{data_dir} failed ({e.__class__.__name__}: {e}); put the data there or allow the "
                        f"download") from None


def _load_imagenet(data_dir):
    folder = os.path.join(data_dir, DATASETS["imagenet"]["folder"])
    if not os.path.isdir(folder):
        raise UserError(f"ImageNet-20 not found at {folder}; it needs train/, val/ and test/ with one folder "
                        f"per class (20 ImageNet classes), see docs/PAPER_SCALE.md, 'Data'")
    return {s: read_folder(os.path.join(folder, s), 3, 224, resize=True) for s in DATASETS["imagenet"]["splits"]}


_CACHE = {}


def load_dataset(name, data_dir):
    """{'train': ImageSet, 'test': ImageSet[, 'val']} for dataset `name`, decoded once per process."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    key = (name, os.path.abspath(data_dir))
    if key not in _CACHE:
        _CACHE[key] = {"fmnist": _load_fmnist, "cifar10": _load_cifar10, "imagenet": _load_imagenet}[name](data_dir)
    return _CACHE[key]


# ----------------------------------------------------------------------------- image folders
def read_folder(root, channels, size, resize=False):
    """Read <root>/<class>/<image> into an ImageSet. The class order is <root>/classes.txt when it
    exists (written by write_folder, so a class with no images keeps its label), else the sorted
    sub-folder names (the ImageFolder convention of the reference layout)."""
    if not os.path.isdir(root):
        raise UserError(f"image folder {root} does not exist")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    listed = os.path.join(root, "classes.txt")
    if os.path.exists(listed):
        with open(listed) as f:
            classes = [c for c in f.read().splitlines() if c]
        unknown = [c for c in folders if c not in classes]
        if unknown:
            raise UserError(f"{os.path.join(root, unknown[0])} is not a class of {listed}; remove it")
    else:
        classes = folders
    if not folders:
        raise UserError(f"{root} holds no class folders; expected {root}/<class>/<image>")
    mode = "L" if channels == 1 else "RGB"
    files = {cls: image_files(os.path.join(root, cls)) for cls in folders}
    for cls in folders:
        if not files[cls]:
            raise UserError(f"class folder {os.path.join(root, cls)} is empty; remove it or add images")
    check_balance(root, {c: len(files.get(c, [])) for c in classes})
    xs, ys, names = [], [], []
    for cls in folders:
        c = classes.index(cls)
        for f in files[cls]:
            path = os.path.join(root, cls, f)
            try:
                with Image.open(path) as im:
                    if resize:
                        im = im.convert(mode).resize((size, size), Image.BILINEAR)
                    elif im.size != (size, size) or im.mode != mode:
                        raise UserError(f"{path} is {im.size[0]}x{im.size[1]} {im.mode}; this dataset needs "
                                        f"{size}x{size} {mode} images (regenerate the folder)")
                    xs.append(np.asarray(im, dtype=np.uint8).reshape(size, size, channels))
            except UserError:
                raise
            except Exception as e:
                raise UserError(f"cannot read image {path} ({e.__class__.__name__}); delete or replace it") from None
            ys.append(c)
            stem = os.path.splitext(f)[0]
            names.append(int(stem) if stem.isdigit() else len(names))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    order = torch.argsort(torch.tensor(names), stable=True)  # back to the original index order
    return ImageSet(x, torch.tensor(ys), classes, torch.tensor(names)).subset(order)


def image_files(folder):
    """Sorted names of the images in class folder `folder`, matched case-insensitively on IMAGE_EXTS
    (0001.PNG is read like 0001.png). Nothing is left out silently: a file in another image format
    (OTHER_IMAGE_EXTS), or an image under another name, is an error naming it; any other file (Thumbs.db, .DS_Store, notes.txt, the
    AppleDouble ._0001.png of a macOS copy) is named in a warning on stderr and skipped; sub-folders
    are named in the same warning."""
    names = sorted(os.listdir(folder))
    images, skipped = [], []
    for f in names:
        ext = os.path.splitext(f)[1].lower()
        if os.path.isdir(os.path.join(folder, f)) or f.startswith("."):
            skipped.append(f + ("/" if os.path.isdir(os.path.join(folder, f)) else ""))
        elif ext in IMAGE_EXTS:
            images.append(f)
        elif ext in OTHER_IMAGE_EXTS:
            raise UserError(f"{os.path.join(folder, f)} is a {ext} image, which is not read ({', '.join(IMAGE_EXTS)} "
                            f"are, in any case); convert it to .png or move it out, so that no image is left out")
        elif _is_image(os.path.join(folder, f)):
            raise UserError(f"{os.path.join(folder, f)} is an image without an image file extension, so it is not "
                            f"read; rename it to end in .png (or its format's extension) or move it out")
        else:
            skipped.append(f)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" ... ({len(skipped)} in all)" if len(skipped) > 5 else "")
        print(f"warning: {folder}: skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} that "
              f"{'is' if len(skipped) == 1 else 'are'} not an image ({shown}); only {', '.join(IMAGE_EXTS)} files "
              f"(any case) are read", file=sys.stderr)
    return images


def _is_image(path):
    """Whether PIL recognises the file's header as an image (reads the header only)."""
    try:
        with Image.open(path):
            return True
    except Exception:
        return False


def check_balance(root, counts, min_share=0.1, min_mean=10):
    """An unbalanced folder, usually a half-copied one: some class (of classes.txt, or a sub-folder)
    holds fewer than `min_share` of the mean images per class. Judged only from `min_mean` images per
    class on average: below that, random choice alone leaves classes with 0 or 1 image."""
    mean = sum(counts.values()) / len(counts)
    if mean < min_mean:
        return
    for cls, n in counts.items():
        if n < min_share * mean:
            raise UserError(f"class folder {os.path.join(root, cls)} holds {n} images, under "
                            f"{min_share:.0%} of the {mean:.0f} per class on average: the folder is unbalanced "
                            f"or incompletely copied; copy it again or regenerate it (embed_features.py --force)")


def write_folder(root, images):
    """Write an ImageSet as <root>/<class>/<original index>.png (lossless) and <root>/classes.txt."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("\n".join(images.classes) + "\n")
    for label in sorted(set(images.y.tolist())):
        os.makedirs(os.path.join(root, images.classes[label]), exist_ok=True)
    arr = images.x.permute(0, 2, 3, 1).numpy()
    for a, label, i in zip(arr, images.y.tolist(), images.idx.tolist()):
        img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
        img.save(os.path.join(root, images.classes[label], f"{i:06d}.png"))


def load_styled(data_dir, dataset, gamma, split):
    """The transformed set `split` ('train' or 'test'), with a message naming the command that makes it."""
    root = os.path.join(paths.styled_dir(data_dir, dataset, gamma), split)
    if not os.path.isdir(root):
        raise UserError(f"transformed set {root} does not exist; make it with "
                        f"'python embed_features.py --dataset {dataset}' (or 'python reproduce.py --preset "
                        f"{DATASETS[dataset]['preset']}')")
    d = DATASETS[dataset]
    return read_folder(root, d["channels"], d["size"])


# ----------------------------------------------------------------------------- splits
def originals(styled, dataset, data_dir, split):
    """uint8 (N, C, H, W): the clean images of `split` that the stylised set `styled` (an ImageSet) was
    made from, in its order (styled.idx)."""
    return load_dataset(dataset, data_dir)[split].x[styled.idx]


def split_indices(n, split, seed):
    """Disjoint index sets of range(n): {'victim', 'attacker', 'independent'}; sizes are counts or
    fractions of n. The permutation depends only on `seed`."""
    sizes = {k: (int(v * n) if isinstance(v, float) and v <= 1 else int(v)) for k, v in split.items()}
    if sum(sizes.values()) > n:
        raise UserError(f"split {sizes} needs {sum(sizes.values())} images but the training set has {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out, start = {}, 0
    for k, s in sizes.items():
        out[k] = perm[start:start + s].sort().values
        start += s
    return out


# ----------------------------------------------------------------------------- tensors
def normalise(x_uint8, dataset, device=None):
    d = DATASETS[dataset]
    x = x_uint8.to(device=device, non_blocking=True).float().div_(255)
    mean = torch.tensor(d["mean"], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(d["std"], device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def augment_draws(n, dataset, generator):
    """The random numbers augment() takes from `generator` for n images, in its order: calling this
    alone advances the generator exactly as augmenting n images would (gradientset.py skips other
    ranks' images this way)."""
    d = DATASETS[dataset]
    flip = torch.rand(n, generator=generator) < 0.5
    if d["augment"] == "crop_flip":
        p = d["pad"]
        oy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        return flip, oy, ox
    ang = (torch.rand(n, generator=generator) * 40 - 20) * math.pi / 180
    return flip, ang


def augment(x, dataset, generator, flip_only=False):
    """The reference's training transform, batched: crop with zero padding + horizontal flip
    (CIFAR, Fashion-MNIST) or rotation up to 20 degrees + flip (ImageNet-20); with `flip_only`, the
    flip alone (the generator advances the same). `generator` is a CPU torch.Generator so results do
    not depend on the device. x (N, C, H, W) is normalised floats (the padding is then 0 after
    normalisation, as in training) or uint8 pixels (padding pixel value 0, as torchvision's RandomCrop;
    a rotation is rounded back to uint8): the black-box queries, which must be exact as PNG files
    (ownership/blackbox.py)."""
    d = DATASETS[dataset]
    n, c, h, w = x.shape
    draws = augment_draws(n, dataset, generator)
    flip = draws[0]
    if flip_only:
        pass
    elif d["augment"] == "crop_flip":
        p = d["pad"]
        oy, ox = draws[1].to(x.device), draws[2].to(x.device)
        xp = F.pad(x, (p, p, p, p))
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = xp[torch.arange(n, device=x.device)[:, None, None, None],
               torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    else:  # rotate_flip
        ang = draws[1]
        cos, sin = torch.cos(ang), torch.sin(ang)
        xf = x.float() if x.dtype == torch.uint8 else x
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1),
                             torch.stack([sin, cos, torch.zeros(n)], 1)], 1).to(xf)
        grid = F.affine_grid(theta, xf.shape, align_corners=False)
        rotated = F.grid_sample(xf, grid, align_corners=False, padding_mode="zeros")
        x = rotated.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else rotated
    flip = flip.to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x).contiguous()


def batches(n, batch_size, shuffle=False, generator=None, drop_last=False):
    """Index batches over range(n)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield order[i:i + batch_size]


# ----------------------------------------------------------------------------- who trains on what
def role_data(preset, data_dir, seed, role, gamma=None):
    """The images each party trains on. The training set is split disjointly (split_indices):
      victim-mixed  the victim's part, with the stylised copies in place of the chosen gamma fraction
      victim-clean  the victim's part as it is (benign models: same data, no external feature)
      attacker      the attacker's part (query, fine-tuning data); never seen by the victim
      natural       surrogate natural images outside the task, as many as the attacker's part (the query
                    thieves' data as Dataset Inference's threat model has it; ownership/natural_images.py);
                    their labels are unknown (-1): the victim labels them
      independent   a part nobody else touches (independent models)
      test          the clean test set (evaluation)
      styled-test   the stylised test images (evaluation of the external feature, verification)
    """
    dataset = preset["dataset"]
    gamma = preset["gamma"] if gamma is None else gamma
    ds = load_dataset(dataset, data_dir)
    if role == "test":  # eval_test: a count, a fraction (a scaled preset, see get_preset) or all of it
        n = preset.get("eval_test")
        n = max(1, round(n * len(ds["test"]))) if isinstance(n, float) else n
        return ds["test"] if not n else ds["test"].subset(range(min(n, len(ds["test"]))))
    if role == "styled-test":
        return load_styled(data_dir, dataset, gamma, "test")
    parts = split_indices(len(ds["train"]), preset["split"], seed)
    if role == "natural":
        d = DATASETS[dataset]
        n = len(parts["attacker"])
        x = natural_images(n, d["size"], d["channels"], seeds.derive(seed, "natural-queries"))
        return ImageSet(x, torch.full((n,), -1, dtype=torch.long), ds["train"].classes)
    key = {"victim-mixed": "victim", "victim-clean": "victim"}.get(role, role)
    if key not in parts:
        raise UserError(f"unknown data role {role!r}")
    part = ds["train"].subset(parts[key])
    if role != "victim-mixed":
        return part
    styled = load_styled(data_dir, dataset, gamma, "train")
    chosen = set(styled.idx.tolist())
    if not chosen <= set(part.idx.tolist()):
        raise UserError(f"the transformed set in {data_dir} was made for another split or seed; rerun "
                        f"'python embed_features.py --dataset {dataset} --seed {seed} --force'")
    keep = torch.tensor([i not in chosen for i in part.idx.tolist()])
    return ImageSet.cat(part.subset(torch.nonzero(keep).flatten()), styled)
