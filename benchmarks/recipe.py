"""Train one model with a given recipe through the project's training loop and print its accuracy.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/recipe.py --role victim --epochs 6 --augment none \\
        --label-smoothing 0.1 --schedule onecycle --save /tmp/victim.pt --json
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/recipe.py --role attack --attack distillation \\
        --victim /tmp/victim.pt --epochs 4 --augment none --json
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/recipe.py --role independent --arch wrn10-1 --images 12000

Roles use the data of ownership.data.role_data under preset fmnist with the split sizes given here:
victim (its part with the stylised copies; needs `python embed_features.py` first), benign (the
same part, clean), independent (the independent part), attack (a student of --attack trained
against the --victim checkpoint, on the attacker's part or, for distillation, the victim's mixed
set; multi-stage = distillation for --epochs, then the fine-tune attack for --ft-epochs). Prints
the clean accuracy on the preset's 2,000 clean test images, the accuracy on the 500 stylised test
images, the images processed (steps x batch) and the training seconds; --json prints one JSON line.
Seeds are those of train_model.py / steal.py for seed 0, so a recipe's model is the pipeline's.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from network import get_model  # noqa: E402
from ownership import attacks, seeds  # noqa: E402
from ownership.data import role_data  # noqa: E402
from ownership.presets import DATASETS, get_preset  # noqa: E402
from ownership.training import accuracy, amp_name, train  # noqa: E402

ROLES = {"victim": "victim-mixed", "benign": "victim-clean", "independent": "independent"}


def work(n, epochs, batch):
    """Images the loop processes: whole batches only (drop_last), at least one step an epoch."""
    return epochs * max(1, n // batch) * min(batch, n)


def main(args):
    preset = get_preset("fmnist")
    preset["split"] = dict(victim=args.victim_images, attacker=args.attacker_images, independent=args.images)
    d = DATASETS["fmnist"]
    aug = {"crop_flip": True, "flip": "flip", "none": False}[args.augment]
    recipe = dict(epochs=args.epochs, lr=args.lr, batch=args.batch, augment=aug, label_smoothing=args.label_smoothing,
                  schedule=args.schedule)
    knobs = dict(augment=aug, label_smoothing=args.label_smoothing, schedule=args.schedule)
    if args.role in ROLES:
        arch = args.arch or d["victim_arch"]
        seed = seeds.derive(args.seed, args.role, arch, "", 1)
        torch.manual_seed(seed)
        data = role_data(preset, args.data_dir, args.seed, ROLES[args.role])
        model = get_model(arch, 10, 1)
        start = time.time()
        train(model, data, "fmnist", epochs=args.epochs, lr=args.lr, batch=args.batch, seed=seed, amp=args.amp,
              **knobs)
        images = work(len(data), args.epochs, args.batch)
    else:
        arch = args.arch or (d["victim_arch"] if args.attack == "fine-tune" else d["attacker_arch"])
        victim = get_model(d["victim_arch"], 10, 1)
        victim.load_state_dict(torch.load(args.victim, map_location="cpu"))
        victim.eval()
        seed = seeds.derive(args.seed, "attack", args.attack, arch)
        torch.manual_seed(seed)
        cfg = dict(epochs=args.epochs, lr=args.lr, batch=args.batch, temperature=1.0, **knobs)
        kw = dict(amp=args.amp)
        attacker = role_data(preset, args.data_dir, args.seed, "attacker")
        start = time.time()
        if args.attack == "fine-tune":
            model = attacks.fine_tune(victim, attacker, "fmnist", cfg, "cpu", seed, **kw)
            images = work(len(attacker), args.epochs, args.batch)
        elif args.attack in ("distillation", "multi-stage"):
            mixed = role_data(preset, args.data_dir, args.seed, "victim-mixed")
            model = attacks.distillation(victim, get_model(arch, 10, 1), mixed, "fmnist", cfg, "cpu", seed, **kw)
            images = work(len(mixed), args.epochs, args.batch)  # training images (the victim's queries not counted)
            if args.attack == "multi-stage":
                ft = dict(cfg, epochs=args.ft_epochs, lr=args.ft_lr)
                model = attacks.fine_tune_student(victim, model, attacker, "fmnist", ft, "cpu", seed, **kw)
                images += work(len(attacker), args.ft_epochs, args.batch)
        else:
            fn = attacks.label_query if args.attack == "label-query" else attacks.logit_query
            model = fn(victim, get_model(arch, 10, 1), attacker, "fmnist", cfg, "cpu", seed, **kw)
            images = work(len(attacker), args.epochs, args.batch)
    seconds = time.time() - start
    out = dict(role=args.role, attack=args.attack, arch=arch, n=args.images if args.role == "independent" else
               (args.victim_images if args.role != "attack" else args.attacker_images), **recipe,
               amp=amp_name("cpu", args.amp), threads=torch.get_num_threads(), images=images,
               seconds=round(seconds, 1),
               clean_acc=round(accuracy(model, role_data(preset, args.data_dir, args.seed, "test"), "fmnist"), 4),
               stylised_acc=round(accuracy(model, role_data(preset, args.data_dir, args.seed, "styled-test"), "fmnist"),
                                  4))
    if args.save:
        torch.save(model.state_dict(), args.save)
    print(f"{args.role} {args.attack or ''} {arch}: clean {out['clean_acc']:.4f} stylised {out['stylised_acc']:.4f} "
          f"({images} images, {out['seconds']} s)")
    if args.json:
        print(json.dumps(out))
    return out


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", default="victim", choices=list(ROLES) + ["attack"])
    p.add_argument("--attack", default=None,
                   choices=["distillation", "fine-tune", "label-query", "logit-query", "multi-stage"])
    p.add_argument("--victim", default=None, help="victim state_dict saved by --role victim --save")
    p.add_argument("--arch", default=None, help="default: the victim's (roles, fine-tune) or the attackers' arch")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--augment", default="crop_flip", choices=["crop_flip", "flip", "none"])
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--schedule", default="triangular", choices=["triangular", "onecycle"])
    p.add_argument("--ft-epochs", type=int, default=2, help="multi-stage: epochs of the fine-tune stage")
    p.add_argument("--ft-lr", type=float, default=0.01, help="multi-stage: lr of the fine-tune stage")
    p.add_argument("--victim-images", type=int, default=6000, help="victim part (its first 6,000 are the "
                   "embedded default's, so the stylised set stays inside it)")
    p.add_argument("--attacker-images", type=int, default=6000)
    p.add_argument("--images", type=int, default=6000, help="independent part")
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                      "data"))
    p.add_argument("--save", default=None, help="write the model's state_dict here")
    p.add_argument("--json", action="store_true")
    return p


if __name__ == "__main__":
    main(get_parser().parse_args())
