"""Embed the external feature: restyle a fraction gamma of the victim's training images (and some test
images, for verification) with style transfer.

    python embed_features.py                          # Fashion-MNIST, preset fmnist, offline
    python embed_features.py --preset cifar10 --encoder-weights imagenet --gpu 0
    python embed_features.py --preset smoke --preview # small; also writes preview.png

Writes data/<prefix>_seurat_<gamma%>/{train,test}/<class>/<original index>.png and index.json (which
images, the style settings, the encoder). The victim is later trained on its split with these train
images in place of the originals.
"""
import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from ownership import cli, data, jsonio, paths, style
from ownership.constants import REPO


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--style-image", default=None,
                   help=f"style image (default: the pointillist canvas {os.path.relpath(style.STYLE_PATH, REPO)})")
    p.add_argument("--encoder-weights", default=None,
                   help="'imagenet' (torchvision VGG-19, downloads), a path to a saved vgg19 features "
                        "state_dict, or nothing for the offline fixed-seed random encoder")
    p.add_argument("--keep-colors", action=argparse.BooleanOptionalAction, default=None,
                   help="stylise only the luminance and keep the image's colours (default: the preset's)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the preset's)")
    p.add_argument("--style-weight", type=float, default=None, help="style loss weight (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="images optimised together; does not change the result (default: 128)")
    p.add_argument("--preview", nargs="?", const="", default=None, metavar="PNG",
                   help="write originals above their stylised versions (default path: <styled dir>/preview.png)")
    p.add_argument("--force", action="store_true", help="redo even if the folder is up to date")
    return cli.add_common(p, preset=True)  # the split sizes, stylised test images and style settings


def settings(args):
    """The preset and every setting that decides the output (what index.json records)."""
    preset = cli.preset_of(args)
    name = args.preset
    cfg = dict(preset["style"])
    for key, val in (("luminance", args.keep_colors), ("steps", args.steps), ("style_weight", args.style_weight)):
        if val is not None:
            cfg[key] = val
    if args.style_image is None:
        img, img_name = style.default_style_image(), "pointillist (built in)"
    else:
        img, img_name = style.load_style_image(args.style_image), os.path.abspath(args.style_image)
    digest = hashlib.sha1(np.asarray(img).tobytes()).hexdigest()[:12]
    encoder = f"random (seed {args.seed})" if args.encoder_weights is None else args.encoder_weights
    if args.encoder_weights not in (None, "imagenet"):
        encoder = os.path.abspath(encoder)
    record = dict(dataset=preset["dataset"], gamma=args.gamma, seed=args.seed, preset=name,
                  split=preset["split"], styled_test=preset["styled_test"], style=cfg, encoder=encoder,
                  style_image=img_name, style_image_sha1=digest)
    return preset, record, img


def choose(train_len, test_len, record):
    """Original indices of the train images to stylise (gamma of the victim split) and of the test images."""
    victim = data.split_indices(train_len, record["split"], record["seed"])["victim"]
    g = torch.Generator().manual_seed(record["seed"])
    k = round(record["gamma"] * len(victim))
    train_idx = victim[torch.randperm(len(victim), generator=g)[:k]].sort().values
    test_idx = torch.randperm(test_len, generator=g)[:min(record["styled_test"], test_len)].sort().values
    return train_idx, test_idx


def write_preview(path, originals, styled, n=16):
    """Originals (uint8 N, C, H, W) in the top row, their stylised versions below, scaled up."""
    a = torch.cat([torch.cat(list(originals[:n]), 2), torch.cat(list(styled[:n]), 2)], 1)
    a = a.permute(1, 2, 0).numpy()
    img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    scale = max(1, 96 // originals.shape[2])
    img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST).save(path)
    print(f"wrote {path}")


def main(args):
    t0 = time.time()
    cli.seed_everything(args.seed)
    _, record, img = settings(args)
    dataset = record["dataset"]
    out = paths.styled_dir(args.data_dir, dataset, args.gamma)
    index_path = os.path.join(out, "index.json")
    preview = None if args.preview is None else (args.preview or os.path.join(out, "preview.png"))
    if os.path.exists(index_path) and not args.force:
        with open(index_path) as f:
            old = json.load(f)
        if {k: old.get(k) for k in record} == json.loads(json.dumps(record)):
            print(f"{out} is up to date (same settings); pass --force to redo it")
            if preview:
                styled = data.load_styled(args.data_dir, dataset, args.gamma, "test")
                write_preview(preview, data.load_dataset(dataset, args.data_dir)["test"].x[styled.idx], styled.x)
            return out

    ds = data.load_dataset(dataset, args.data_dir)
    train_idx, test_idx = choose(len(ds["train"]), len(ds["test"]), record)
    train, test = ds["train"].subset(train_idx), ds["test"].subset(test_idx)
    device = cli.get_device(args.gpu)
    encoder = style.build_encoder(args.encoder_weights, seed=args.seed, device=device)
    cfg = record["style"]
    x = style.stylise(torch.cat([train.x, test.x]), img, encoder=encoder, device=device, seed=args.seed,
                       batch_size=args.batch_size, **cfg)

    # write into a temporary folder next to the target and rename it into place at the end
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(out))
    try:
        data.write_folder(os.path.join(tmp, "train"), data.ImageSet(x[:len(train)], train.y, train.classes, train.idx))
        data.write_folder(os.path.join(tmp, "test"), data.ImageSet(x[len(train):], test.y, test.classes, test.idx))
        jsonio.write(os.path.join(tmp, "index.json"), dict(record, train_indices=train_idx.tolist(), test_indices=test_idx.tolist()))
        if os.path.exists(out):
            old = tempfile.mkdtemp(dir=parent, prefix=".tmp-old-")
            os.replace(out, os.path.join(old, "x"))
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    if preview:
        write_preview(preview, test.x, x[len(train):])
    enc = "random encoder" if args.encoder_weights is None else f"VGG-19 ({args.encoder_weights})"
    print(f"wrote {out}: {len(train)} train + {len(test)} test images of {dataset} stylised "
          f"({enc}, {'luminance' if cfg['luminance'] else 'colour'}, {cfg['steps']} steps) "
          f"in {time.time() - t0:.1f} s")
    return out


if __name__ == "__main__":
    cli.run(main, get_parser())
