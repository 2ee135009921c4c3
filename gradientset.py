"""Collect a model's white-box feature vectors on the transformed (stylised) images: the signs of its
per-sample weight gradients (the paper), with --feature input-gradient its per-sample input gradients
(and two log-losses), with --feature stylised-loss its log-loss on each stylised image; the default is
the dataset's preset's (fmnist: stylised-loss; cifar10, imagenet: weight-signs).

    python gradientset.py --model=wrn16-1 --m=./model/victim/vict-wrn16-1.pt --dataset=cifar10 --gpu=0
    python gradientset.py --m=./model/victim/vict-wrn16-1.pt --dataset=fmnist
    torchrun --standalone --nproc_per_node=4 gradientset.py --model_root=model/victim/vict-wrn28-10.pt --dataset=cifar10

Writes gradients_set/<model file>/<dataset>_seurat_10%/g_l.npy (stylised log-losses, the fmnist default),
g_x.npy (input gradients; both float32) or g_f.npy (int8 signs), one row per image, and what made it in
g_l.json (g_x.json, g_f.json).
Under torchrun each rank takes a contiguous shard of the images and rank 0 writes the one file,
identical to a single process's. Spell --m as --model_root there: torchrun's parser takes --m for an
ambiguous prefix of its own options (--module, --master-addr ...) and stops.
"""

from network import MODELS
from ownership import cli, gradient_sets
from ownership import distributed as dd
from ownership.constants import WHITE_BOX


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--model", choices=list(MODELS), default=None,
                   help="architecture (default: the one recorded in the checkpoint)")
    p.add_argument("--model_root", "--m", dest="model_root", required=True, help="model checkpoint (.pt)")
    p.add_argument("--num_classes", type=int, default=None, help="default: the dataset's")
    p.add_argument("--gradientset_path", default=None,
                   help="output file (default: gradients_set/<model file>/<data folder>/g_l.npy, g_x.npy or "
                        "g_f.npy by --feature; fmnist: g_l.npy)")
    p.add_argument("--batch_size", type=int, default=128, help="images per batched gradient step")
    p.add_argument("--split", default="train", choices=["train", "test"],
                   help="which part of the transformed set (default: train, as the reference)")
    p.add_argument("--feature", default=None, choices=WHITE_BOX,
                   help="weight-signs: signs of the reduced weight gradients (the paper); input-gradient: the loss "
                        "gradient w.r.t. the image and two log-losses; stylised-loss: the log-loss on the stylised "
                        "image (default: the preset's, white_box in ownership/presets.py: fmnist "
                        "stylised-loss, cifar10 and imagenet weight-signs)")
    p.add_argument("--augment", dest="augment", action="store_true", default=None,
                   help="apply the training transform to the images (default: the preset's; the reference did)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="use the images as they are instead of the training transform")
    return cli.add_common(p, preset=True)


def main(args):
    white_box = cli.preset_of(args)["white_box"]
    cli.seed_everything(args.seed)
    device = dd.setup(cli.get_device(args.gpu))
    feature = args.feature or white_box["feature"]
    augment = white_box["augment"] if args.augment is None else args.augment
    out = gradient_sets.collect(args.model_root, args.dataset, args.data_dir, args.grad_dir, args.gamma, args.split,
                                args.model, args.num_classes, device, args.batch_size, augment, args.seed,
                                args.gradientset_path, feature)
    if dd.is_main():
        print(f"wrote {out}")
    return out


if __name__ == "__main__":
    cli.run(main, get_parser())
