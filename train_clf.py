"""Train the ownership meta-classifier: white-box feature vectors of victim-like models (label 1)
against those of benign models (label 0): the paper's gradient signs, input gradients or the log-loss
on each stylised image (--feature; default: the dataset's preset's, as gradientset.py: fmnist
stylised-loss, cifar10 and imagenet weight-signs).

    python train_clf.py --type=wrn28-10 --dataset=cifar10 --gpu=0
    python train_clf.py --type=wrn16-1 --dataset=fmnist

By default the positives are model/victim/vict-<type>.pt plus the other-seed victims vict-<type>-s<k>.pt,
and the negatives model/benign/benign-<type>.pt plus benign-<type>-s<k>.pt (never the held-out references
benign-<type>-ref*.pt); --access black-box adds the weak benign models benign-<type>-weak<k>.pt to the
negatives, and the defender's simulated thefts with <type> students that exist, model/theft/vict-*-<type>.pt
to the positives and model/theft/benign-*-<type>.pt to the negatives (reproduce.py makes them);
--pos/--neg take explicit lists. Their gradient sets must exist (gradientset.py).
Writes model/clf/gradsign-<dataset>-<type>.pt and prints the held-out accuracy.
--access black-box trains on prediction shifts instead (MOVE; no gradient sets needed, the models
are queried directly; --feature prediction-shift, or shift-true-label, which adds the probability each model gives
the original's true label; default: the dataset's preset's) and writes model/clf/blackbox-<dataset>-<type>.pt; without --type it trains one
classifier on the models of every architecture, model/clf/blackbox-<dataset>.pt, the one that verifies a
suspect of any architecture behind an API (docs/API.md):

    python train_clf.py --access black-box --dataset fmnist
"""
import os

from network import MODELS
from ownership import blackbox, cli, gradient_sets, jsonio, metaclf, paths
from ownership.constants import ACCESSES, BLACK_BOX_FEATURES, WHITE_BOX
from ownership.features import FEATURES, names
from ownership.errors import UserError
from ownership.checkpoints import load_model, save_checkpoint
from ownership.data import load_styled, originals
from ownership.presets import DATASETS


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--model_type", "--type", dest="model_type", default=None, choices=list(MODELS),
                   help="architecture of the models whose white-box features are classified (required for white-box; "
                        "black-box without it: one classifier over every architecture, blackbox-<dataset>.pt)")
    p.add_argument("--mlp_epoch", type=int, default=None, help="epochs (default: the preset's clf; reference: 100)")
    p.add_argument("--lr", type=float, default=None, help="SGD learning rate (default: the preset's; reference: 0.01)")
    p.add_argument("--batch_size", type=int, default=None, help="batch size (default: the preset's; reference: 128)")
    p.add_argument("--hidden-cap", type=int, default=None,
                   help="cap on the MLP widths d/8 and d/16 (default: the preset's; the reference had no cap: 61M "
                        "weights at d=22k)")
    p.add_argument("--pos", nargs="+", default=None,
                   help="victim-like checkpoints (default: vict-<type>.pt, vict-<type>-s<k>.pt and, black-box, the "
                        "simulated thefts model/theft/vict-*-<type>.pt)")
    p.add_argument("--neg", nargs="+", default=None,
                   help="benign checkpoints (default: benign-<type>.pt, benign-<type>-s<k>.pt, and for black-box "
                        "benign-<type>-weak<k>.pt and model/theft/benign-*-<type>.pt)")
    p.add_argument("--access", default="white-box", choices=ACCESSES,
                   help="white-box: the gradient sets of --feature; black-box: prediction shifts (MOVE)")
    p.add_argument("--feature", default=None, choices=WHITE_BOX + BLACK_BOX_FEATURES,
                   help="white-box: which gradient sets (gradientset.py --feature) the classifier reads, one of "
                        f"{', '.join(WHITE_BOX)}; black-box: {' or '.join(BLACK_BOX_FEATURES)} (default: the dataset's "
                        "preset's, as gradientset.py)")
    p.add_argument("--views", type=int, default=4, help="black-box: stylised views per image")
    p.add_argument("--label-only", action="store_true",
                   help="black-box: train on the models' top labels only (one-hot answers), for suspects behind a "
                        "label-only API; such a classifier verifies from labels only (reproduce.py --label-only)")
    p.add_argument("--l2", default="auto", choices=["auto", "on", "off"],
                   help="L2-normalise each feature vector before standardising (auto: on for gradient signs, as "
                        "the reference; off for input gradients, log-losses and black-box prediction shifts, whose size is "
                        "the signal: docs/VALIDITY.md)")
    p.add_argument("--out", default=None, help="output (default: model/clf/gradsign-<dataset>-<type>.pt)")
    return cli.add_common(p, preset=True)


def default_models(args):
    """--pos/--neg, else the defaults of the docstring; black-box without --type: those of every
    architecture that has a victim (positives) or a benign model (negatives) in --model-dir (issue 16).
    In reproduce.py's order (ownership/plan.py, classifiers), so that the same models give the same
    classifier: each kind over every architecture, the victim's architecture first, then the
    attackers', then any other by name."""
    if args.model_type is None and args.access == "white-box":
        raise UserError("--type is required for --access white-box (the models of one architecture)")
    d = DATASETS[args.dataset or "fmnist"]  # None before cli.preset_of: its default preset's, fmnist
    first = [d["victim_arch"], d["attacker_arch"]]
    order = lambda archs: sorted(archs, key=lambda a: (first.index(a) if a in first else 2, a))  # noqa: E731
    v_archs = [args.model_type] if args.model_type else order(paths.archs_with(args.model_dir, "victim"))
    b_archs = [args.model_type] if args.model_type else order(paths.archs_with(args.model_dir, "benign"))
    black = args.access == "black-box"
    every = lambda archs, files: [f for a in archs for f in files(a)]  # noqa: E731
    m = args.model_dir
    pos = args.pos or every(v_archs, lambda a: paths.with_seeds(paths.victim(m, a))) + (
        every(v_archs, lambda a: paths.thefts(m, a, "victim")) if black else [])
    neg = args.neg or every(b_archs, lambda a: paths.with_seeds(paths.benign(m, a))) + (
        every(b_archs, lambda a: paths.weak_models(m, a)) + every(b_archs, lambda a: paths.thefts(m, a, "benign"))
        if black else [])
    return pos, neg


def main(args):
    preset = cli.preset_of(args)
    cli.seed_everything(args.seed)
    device = cli.get_device(args.gpu)
    pos, neg = default_models(args)
    if args.label_only and args.access != "black-box":
        raise UserError("--label-only trains a black-box classifier on top labels; add --access black-box")
    kinds = names(args.access)
    if args.feature is not None and args.feature not in kinds:
        raise UserError(f"--feature {args.feature} is not a {args.access} feature; give one of {', '.join(kinds)}")
    args.feature = args.feature or (preset["white_box"]["feature"] if args.access == "white-box"
                                    else preset["black_box_feature"])
    folder = paths.styled_dir(args.data_dir, args.dataset, args.gamma)
    augment = set()  # white-box: whether the sets were made with the training transform (verify.py repeats it)

    def sets(models):
        out = []
        for m in models:
            if args.access == "black-box":
                model, _ = load_model(m, args.model_type, d["num_classes"], d["channels"], device,
                                      made_by="python train_model.py")
                out.append(blackbox.features(model, styled, clean_x, args.dataset, device, args.views, args.seed,
                                                 args.feature, label_only=args.label_only))
                continue
            g = paths.gradient_set(args.grad_dir, m, folder, feature=args.feature)
            out.append(gradient_sets.load_set(g, f"python gradientset.py --m={m} --dataset={args.dataset} "
                                                 f"--feature {args.feature}"))
            augment.add(gradient_sets.load_meta(g).get("augment", True))
        return out

    d = DATASETS[args.dataset]
    if args.access == "black-box":
        styled = load_styled(args.data_dir, args.dataset, args.gamma, "train")
        clean_x = originals(styled, args.dataset, args.data_dir, "train")

    pos_sets, neg_sets = sets(pos), sets(neg)
    if len(augment) > 1:
        raise UserError(f"the gradient sets of {', '.join(pos + neg)} were made some with and some without "
                        f"--no-augment; remake them all one way with gradientset.py")
    dims = {a.shape[1] for a in pos_sets + neg_sets}
    if len(dims) != 1:
        raise UserError(f"gradient sets have different dimensions {sorted(dims)}: all models must be "
                        f"{args.model_type}")
    l2 = args.l2 == "on" or (args.l2 == "auto" and FEATURES[args.feature].l2)
    c = preset["clf"]  # what a flag does not say, the preset's
    fit = dict(epochs=c["epochs"] if args.mlp_epoch is None else args.mlp_epoch, lr=c["lr"] if args.lr is None else args.lr,
               batch_size=c["batch"] if args.batch_size is None else args.batch_size,
               hidden_cap=c["hidden_cap"] if args.hidden_cap is None else args.hidden_cap, seed=args.seed, l2=l2)
    ck = metaclf.fit(pos_sets, neg_sets, device=device, sources=dict(pos=[os.path.abspath(m) for m in pos],
                                                                     neg=[os.path.abspath(m) for m in neg]), **fit)
    ck["model_level"] = metaclf.model_level_auc(pos_sets, neg_sets, device, **fit)
    ck.update(arch=args.model_type, dataset=args.dataset, gamma=args.gamma, kind=args.access, views=args.views,
              feature=args.feature, augment=augment.pop() if augment else None, label_only=args.label_only,
              args={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))})
    out = args.out or paths.clf(args.model_dir, args.dataset, args.model_type, args.access)
    save_checkpoint(out, ck)
    level = ck["model_level"]
    print(f"meta-classifier {out}: held-out accuracy {ck['test_acc']:.4f} on held-out images of its own models "
          f"({ck['n_train']} train / {ck['n_test']} held-out vectors, d={ck['d']}, hidden={ck['hidden']}); "
          + (f"model-level AUC (leave pair out, {len(level['pairs'])} pairs) {level['auc']:.3f}: mean P(stolen) of "
             "each left-out pair (victim-like, benign) " + ", ".join(f"({a:.2f}, {b:.2f})" for _, _, a, b in level["pairs"])
             if level else "no model-level AUC (fewer than two models in a class)"))
    print(jsonio.dumps({"clf": out, "test_acc": ck["test_acc"], "model_auc": level and level["auc"], "d": ck["d"]}))
    return ck


if __name__ == "__main__":
    cli.run(main, get_parser())
