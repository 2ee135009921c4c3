"""Train the models the reference downloaded: the victim, benign models and independent models.

    python train_model.py --role victim                      # model/victim/vict-<arch>.pt on the mixed set
    python train_model.py --role benign                      # model/benign/benign-<arch>.pt on clean data
    python train_model.py --role benign --tag=-ref           # a held-out benign reference (-ref2, -ref3 ...)
    python train_model.py --role benign --tag=-s1            # another seed and 75 % of the data (for train_clf)
    python train_model.py --role benign --tag=-weak1 --images 256 --epochs 1   # a weak benign model (for train_clf)
    python train_model.py --role benign --tag=-weak3 --epochs 0   # an untrained one: as initialised (for train_clf)
    python train_model.py --role victim --arch wrn10-1       # the defender's pair in the attackers' arch
    python train_model.py --role independent --index 1 --arch wrn10-1   # never-seen data, own seed

The victim trains on its part of the training set with a fraction gamma replaced by stylised copies
(embed_features.py); benign models train on the same part without them; independent models on a
disjoint part nobody else uses. Hyperparameters come from --preset.
"""
import time

import torch

from network import MODELS, get_model
from ownership import checkpoints, cli, paths, seeds
from ownership import distributed as dd
from ownership.data import role_data
from ownership.errors import UserError
from ownership.presets import DATASETS
from ownership.training import SCHEDULES, recipe, save_trained, train

SUBSET = 0.75  # fraction of the part that the other-seed models (--tag -s<k>) train on
ROLES = {"victim": "victim-mixed", "benign": "victim-clean", "independent": "independent"}


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--role", required=True, choices=list(ROLES))
    p.add_argument("--arch", default=None, choices=list(MODELS), help="default: the dataset's victim architecture")
    p.add_argument("--tag", default="", help="suffix of the file name, e.g. -ref for the held-out reference")
    p.add_argument("--index", type=int, default=1, help="k of indep<k>-<arch>.pt for --role independent")
    p.add_argument("--epochs", type=int, default=None,
                   help="override the preset; 0 saves the model as initialised (an untrained negative for train_clf)")
    g = p.add_argument_group("another recipe than the preset's (the validity study's harder negatives)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate")
    g.add_argument("--batch", type=int, default=None, help="batch size")
    g.add_argument("--augment", default=None, choices=["on", "off", "flip"],
                   help="the training transform: crop+flip (or rotation+flip), none, or the flip alone")
    g.add_argument("--label-smoothing", type=float, default=None, help="label smoothing of the targets")
    g.add_argument("--schedule", default=None, choices=list(SCHEDULES), help="learning-rate schedule")
    p.add_argument("--images", type=int, default=None,
                   help="train on the first N images of the role's part only (the weak benign models)")
    p.add_argument("--out", default=None, help="checkpoint path (default: the reference naming)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>.state, saved after every epoch, instead of starting over")
    return cli.add_common(cli.add_amp(p), dataset=False, preset=True)


def out_path(args, arch):
    if args.out:
        return args.out
    if args.role == "victim":
        return paths.victim(args.model_dir, arch, args.tag)
    if args.role == "benign":
        return paths.benign(args.model_dir, arch, args.tag)
    return paths.independent(args.model_dir, args.index, arch)


def main(args):
    preset = cli.preset_of(args)
    dataset = preset["dataset"]
    d = DATASETS[dataset]
    arch = args.arch or d["victim_arch"]
    device = dd.setup(cli.get_device(args.gpu))
    init_seed = seeds.derive(args.seed, args.role, arch, args.tag, args.index)
    cli.seed_everything(init_seed)
    images = role_data(preset, args.data_dir, args.seed, ROLES[args.role], args.gamma)
    if args.tag.startswith("-s") and args.role != "independent":
        # the meta-classifier's other-seed models also see other data: a seeded subset of the
        # defender's own part, so the classifier cannot learn one training set's fingerprint
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(init_seed))
        images = images.subset(keep[:int(SUBSET * len(images))].sort().values)
    if args.images is not None:
        if args.images < 1:
            raise UserError(f"--images {args.images}: give a positive number of images")
        images = images.subset(range(min(args.images, len(images))))
    if args.epochs is not None and args.epochs < 0:
        raise UserError(f"--epochs {args.epochs}: give 0 (untrained) or more")
    cfg = dict(preset["train"])
    if args.tag.startswith("-s") and args.role != "independent" and preset["clf_models"].get("subset_epochs"):
        cfg["epochs"] = preset["clf_models"]["subset_epochs"]  # about the full models' steps on 75 % of the data
    for key in ("epochs", "lr", "batch", "label_smoothing", "schedule"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.augment is not None:
        cfg["augment"] = {"on": True, "off": False, "flip": "flip"}[args.augment]
    model = get_model(arch, d["num_classes"], d["channels"])
    out = out_path(args, arch)
    state = checkpoints.training_state(out, args.resume)
    start = time.time()
    train(model, images, dataset, epochs=cfg["epochs"], lr=cfg["lr"], batch=cfg["batch"], momentum=cfg["momentum"],
          wd=cfg["wd"], device=device, seed=init_seed, amp=args.amp, desc=f"{args.role} {arch}{args.tag}",
          state_path=state, **recipe(cfg))
    return save_trained(model, out, state, preset=preset, data_dir=args.data_dir, seed=args.seed, gamma=args.gamma,
                        device=device, amp=args.amp, start=start, arch=arch, role=args.role, init_seed=init_seed,
                        train=cfg, metrics=dict(train_images=len(images)))


if __name__ == "__main__":
    cli.run(main, get_parser())
