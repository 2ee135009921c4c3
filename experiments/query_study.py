"""Issue 30's screening study: does a defender's lever make the external feature pass through queries?

    python experiments/query_study.py --seed 60 --lever base          # one lever on one dev seed
    python experiments/query_study.py --summary /work/study/results   # the table over what was run

Per seed and lever, in --root/<seed>/<lever>/: the stylised set (embed_features.py with the lever's
style settings), the victim (train_model.py), and the four query thieves (steal.py: label-query and
logit-query, asking with natural images and with the attacker's part). The two independent models of
the seed (train_model.py --role independent, trained once per seed in the base lever's folder) are
scored on each lever's stylised test images. The transfer gap is the query students' stylised accuracy
minus the independent models' (issue 30). Everything else is the fmnist preset. A dev-only script: the
choice it informs is measured afterwards with evaluate.py on held-out seeds.
"""
import argparse
import glob
import json
import os

import numpy as np
from PIL import Image

import embed_features
import steal
import train_model
from ownership import cli, jsonio, paths
from ownership.checkpoints import load_model
from ownership.constants import QUERY_DATA, QUERY_MODES
from ownership.data import role_data
from ownership.presets import get_preset
from ownership.training import accuracy

# lever -> (embed_features flags, train_model flags of the victim, gamma)
LEVERS = {
    "base": ([], [], 0.1),
    "steps100": (["--steps", "100"], [], 0.1),
    "style-weight-2": (["--style-weight", "2.0"], [], 0.1),
    "style-weight-0.3": (["--style-weight", "0.3"], [], 0.1),
    "gamma-0.3": ([], [], 0.3),
    "victim-12-epochs": ([], ["--epochs", "12"], 0.1),
    "victim-augment": ([], ["--augment", "on"], 0.1),
    "style-gravel": (["--style-image", "GRAVEL"], [], 0.1),
}


def run(module, argv):
    return module.main(module.get_parser().parse_args(argv))


def gravel_png(root):
    """scikit-image's gravel photograph as a style image (a natural texture instead of the pointillist canvas)."""
    from skimage import data as skdata
    path = os.path.join(root, "gravel.png")
    if not os.path.exists(path):
        Image.fromarray(skdata.gravel()).convert("RGB").save(path)
    return path


def study(args):
    embed_flags, victim_flags, gamma = LEVERS[args.lever]
    embed_flags = [gravel_png(args.root) if f == "GRAVEL" else f for f in embed_flags]
    base = os.path.join(args.root, str(args.seed), "base")
    work = os.path.join(args.root, str(args.seed), args.lever)
    dirs = ["--data-dir", os.path.join(work, "data"), "--model-dir", os.path.join(work, "model")]
    common = ["--seed", str(args.seed), "--gamma", str(gamma)] + dirs
    amp = ["--amp", args.amp]
    run(embed_features, common + embed_flags)
    run(train_model, common + amp + ["--role", "victim"] + victim_flags)
    for mode in QUERY_MODES:
        for kind in QUERY_DATA:
            run(steal, common + amp + ["--mode", mode, "--query-data", kind])
    if args.lever == "base":
        for k, arch in ((1, "wrn10-1"), (2, "wrn16-1")):
            run(train_model, common + amp + ["--role", "independent", "--index", str(k), "--arch", arch])
    return work, base, gamma


def score(args, work, base, gamma):
    preset = get_preset("fmnist")
    device = cli.get_device(None)
    styled = role_data(preset, os.path.join(work, "data"), args.seed, "styled-test", gamma)
    model_dir = os.path.join(work, "model")
    row = dict(seed=args.seed, lever=args.lever, amp=args.amp)
    _, vck = load_model(paths.victim(model_dir, "wrn16-1"), device=device)
    row["victim"] = {k: vck["metrics"][k] for k in ("clean_acc", "stylised_acc")}
    for mode in QUERY_MODES:
        for kind in QUERY_DATA:
            variant = "" if kind == preset["query_data"][0] else kind
            _, ck = load_model(paths.attack(model_dir, mode, "wrn10-1", variant), device=device)
            row[f"{mode}/{kind}"] = {k: ck["metrics"][k] for k in ("clean_acc", "stylised_acc")}
    indep = []
    for k, arch in ((1, "wrn10-1"), (2, "wrn16-1")):
        model, _ = load_model(paths.independent(os.path.join(base, "model"), k, arch), device=device)
        indep.append(accuracy(model, styled, "fmnist", device))
    row["independent_stylised"] = indep
    for kind in QUERY_DATA:
        students = [row[f"{m}/{kind}"]["stylised_acc"] for m in QUERY_MODES]
        row[f"gap/{kind}"] = float(np.mean(students) - np.mean(indep))
    return row


def summary(root):
    rows = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(root, "*.json")))]
    print("| lever | seed | victim clean / stylised | label-q natural | logit-q natural | label-q attacker | "
          "logit-q attacker | independent stylised | gap natural | gap attacker |")
    print("|---" * 10 + "|")
    cell = lambda r: f"{r['clean_acc']:.3f} / {r['stylised_acc']:.3f}"  # noqa: E731
    for r in rows:
        print(f"| {r['lever']} | {r['seed']} | {cell(r['victim'])} | {cell(r['label-query/natural'])} | "
              f"{cell(r['logit-query/natural'])} | {cell(r['label-query/attacker'])} | {cell(r['logit-query/attacker'])} | "
              f"{np.mean(r['independent_stylised']):.3f} | {r['gap/natural']:+.3f} | {r['gap/attacker']:+.3f} |")


def main(args):
    if args.summary:
        return summary(args.summary)
    work, base, gamma = study(args)
    row = score(args, work, base, gamma)
    os.makedirs(os.path.join(args.root, "results"), exist_ok=True)
    jsonio.write(os.path.join(args.root, "results", f"{args.seed}-{args.lever}-{args.amp}.json"), row)
    print(json.dumps(row))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=60)
    p.add_argument("--lever", choices=list(LEVERS), default="base")
    p.add_argument("--amp", default="auto")
    p.add_argument("--root", default="/work/study")
    p.add_argument("--summary", default=None)
    main(p.parse_args())
