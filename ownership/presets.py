"""Datasets and hyperparameter presets.

Sources of the paper values:
  [P]  Li et al., "Defending against Model Stealing Attacks via Verifying Embedded External Features",
       AAAI 2022, Sec. 5.1 (architectures, gamma = 10 %, alpha = 0.01).
  [DI] Maini et al., "Dataset Inference", ICLR 2021, Sec. 6 / their code (attack budgets, SGD with
       momentum 0.9, wd 5e-4, batch 1000, the triangular lr schedule).
  [R]  The reference repository (transforms, normalisation, reduction rule, meta-classifier settings).
  [Z]  Micaelli & Storkey, "Zero-shot Knowledge Transfer via Adversarial Belief Matching", 2019.
Values not marked are ours, chosen for the CPU-sized default and measured in README / docs.
DATASETS[name]["preset"] is the preset whose protocol (test, m, tau) ownership_verification.py uses
for that dataset unless --preset says otherwise.
"""
import copy
import math

from .constants import COLUMNS, QUERY_DATA
from .errors import UserError

DATASETS = {
    "fmnist": dict(
        num_classes=10, channels=1, size=28, folder="fmnist", styled_prefix="fmnist",
        mean=(0.2860,), std=(0.3530,), augment="crop_flip", pad=2,
        victim_arch="wrn16-1", attacker_arch="wrn10-1", splits=("train", "test"), preset="fmnist"),
    "cifar10": dict(
        num_classes=10, channels=3, size=32, folder="cifar10", styled_prefix="cifar10",
        mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),  # [R]
        augment="crop_flip", pad=4,                                    # [R] RandomCrop(32, 4) + flip
        victim_arch="wrn28-10", attacker_arch="wrn16-1", splits=("train", "test"),  # [P]
        preset="cifar10"),
    "imagenet": dict(
        num_classes=20, channels=3, size=224, folder="sub-imagenet-20", styled_prefix="subimage",
        mean=(0.4802, 0.4481, 0.3975), std=(0.2302, 0.2265, 0.2262),  # [R]
        augment="rotate_flip", pad=0,                                  # [R] RandomRotation(20) + flip
        victim_arch="resnet34-imgnet", attacker_arch="resnet18-imgnet",  # [P]
        splits=("train", "val", "test"), preset="imagenet"),
}

_SGD = dict(momentum=0.9, wd=5e-4)  # [DI]
# The training recipe every train() call of a preset names (ownership.training.recipe): the dataset's
# augmentation or none ("flip": its flip alone), label smoothing of hard targets, lr schedule.
_REF = dict(augment=True, label_smoothing=0.0, schedule="triangular")  # [R] transforms, [DI] schedule
# Fashion-MNIST at a few epochs: no augmentation, label smoothing 0.1, one-cycle schedule; each beat the
# reference's recipe at equal work (docs/BENCHMARKS.md, "Training recipe")
_FMNIST = dict(augment=False, label_smoothing=0.1, schedule="onecycle")
# the paper's white-box features, signs of reduced weight gradients [P], on images with the training
# transform [R] (constants.WHITE_BOX); also what --protocol reference uses
PAPER_WHITE_BOX = dict(feature="weight-signs", augment=True)

PER_COLUMN = ("m", "tau")  # the protocol values a preset (and a results.json record) may give per verdict column


def per_column(value, column):
    """The value of verdict column `column` from a preset's (or a results.json protocol's) m or tau: one
    number for every column, or a dict {column: value} (fmnist: the white-box column's own m and tau,
    docs/PROTOCOL.md). Raises ValueError for a dict without that column."""
    if not isinstance(value, dict):
        return value
    if column not in value:
        raise ValueError(f"given per column ({', '.join(value)}); say which column, not {column!r}")
    return value[column]


PRESETS = {
    # Embedded default: Fashion-MNIST on a 2-core CPU in minutes.
    "fmnist": dict(
        dataset="fmnist", gamma=0.1,                                   # gamma: [P]
        split=dict(victim=6000, attacker=6000, independent=6000),      # disjoint parts of train
        styled_test=500,                   # stylised test images used for verification (m draws from these)
        eval_test=2000,                    # clean test images for the accuracy columns
        style=dict(steps=30, lr=0.05, style_weight=0.7, content_weight=1.0, luminance=True,
                   image_size=28, style_scale=2),   # measured in docs/STYLE.md
        # victim, benign, references, independents (wrn16-1 and wrn10-1): 4 epochs of batch 32 without
        # augmentation, label smoothing 0.1, one-cycle: wrn16-1 victim 85.3 % clean / 82.8 % stylised,
        # benign (seed 1) 85.8 %, wrn10-1 85.5 %; batch 32 takes 4x the steps of 128 at about the same cost
        # per image (docs/BENCHMARKS.md, "Training recipe"; was 3 epochs of 128 with crop+flip: 75 %)
        train=dict(epochs=4, lr=0.05, batch=32, **_SGD, **_FMNIST),
        # attacks at batch 32 with the same recipe: 2 epochs reach 93-94 % of the victim (85.3 %), 3 epochs
        # 95-98 %; fine-tune keeps its 2 epochs at lr 0.01 (99 %); the multi-stage student is the 2-epoch
        # distillation one, fine-tuned as fine-tune is (2 + 1 epochs: 94 %) (docs/BENCHMARKS.md, "Training recipe")
        attacks={
            "distillation": dict(epochs=2, lr=0.05, batch=32, temperature=1.0, data="victim", **_FMNIST),
            "fine-tune": dict(epochs=2, lr=0.01, batch=32, **_FMNIST),
            "label-query": dict(epochs=2, lr=0.05, batch=32, **_FMNIST),
            "logit-query": dict(epochs=2, lr=0.05, batch=32, **_FMNIST),
            # zero-shot: 160 DFAD iterations, so that the thief steals at least half the victim's accuracy (issue 30):
            # on the seed-0 victim (85.3 %) 40 iterations gave 12.5-22.8 % clean accuracy, 160 gave 64.6 % in 104 s
            # against 26 s (bf16, one 2-thread process) (docs/VALIDITY.md, "Zero-shot thief, 160 iterations")
            "zero-shot": dict(iterations=160, batch=128, student_steps=5, lr_g=1e-3, lr_s=0.1, z_dim=100,
                              gen_width=16),
        },
        # what the query thieves (label-query, logit-query) ask the victim with, constants.QUERY_DATA: the first
        # is the attack of the reference naming (atta-label-wrn10-1.pt), the others are trained beside it as rows
        # of their own (atta-label-wrn10-1-natural.pt). attacker: unlabelled images of the task's own distribution
        # that the victim never saw, as Dataset Inference's thieves ask CIFAR-10's victim with TinyImages, the
        # collection CIFAR-10 was drawn from [DI, their code]; natural: surrogate natural images from outside the
        # task (ownership/natural_images.py), as Knockoff Nets' thieves; on dev seeds 60-61 they stole 7-31 % clean
        # accuracy, a weak theft (docs/VALIDITY.md, "Query thieves")
        query_data=("attacker", "natural"),
        independents=[("wrn10-1", 101), ("wrn16-1", 102)],
        # harder negatives of the validity study (reproduce.py --hard-negatives): independent models
        # trained with recipes the defender never used, as train_model.py flags (docs/VALIDITY.md)
        hard_negatives=[("wrn10-1", dict(augment="on", label_smoothing=0.0)),   # crop+flip, no smoothing
                        ("wrn16-1", dict(epochs=8)),                              # twice the epochs
                        ("wrn10-1", dict(lr=0.1, batch=128, schedule="triangular"))],  # the old recipe's steps
        clf=dict(epochs=20, lr=0.01, batch=128, hidden_cap=256),
        # per architecture: models behind each meta-classifier, and the held-out benign references of
        # the test; 4 benign models and 4 references chosen from the data in docs/VALIDITY.md; `weak`:
        # more negatives of the black-box classifiers, benign models trained for one epoch on the
        # first n = 256 and 512 images, so that weakness alone is not read as victim-like (docs/VALIDITY.md,
        # "Weak models"; in white-box they made the references look victim-like on seed 0), and for each
        # n = 0 an untrained one, as initialised: an input-blind model's predictions do not move either
        # (docs/VALIDITY.md, "Untrained models"; 4 chosen on seed 30, measured on held-out seeds 35-39)
        # `thefts`: the defender's simulated thefts, more models of the black-box classifiers: per
        # architecture a student of the victim (positive) and of the first benign model (negative) for
        # each listed attack, run by the defender on its own data with the preset's budgets (reproduce.py;
        # steal.py --tag theft), so that a student keeping part of the feature is not read as benign and
        # being a student is not the signal; chosen on dev seeds 45-49, both paths (docs/VALIDITY.md,
        # "Simulated thefts behind the black-box classifier"); white-box did not gain from them (commit 350e0c4)
        clf_models=dict(victims=2, benigns=4, weak=[256, 512, 0, 0, 0, 0], subset_epochs=5,
                        thefts=("distillation", "multi-stage")), references=4,
        # subset_epochs: the other-seed models (-s<k>, 75 % of the part) take about the full models'
        # steps; at 4 epochs a wrn10-1 on 4,500 images reached 82.9 %, at 5 epochs 84.5 %
        # (docs/BENCHMARKS.md, "Training recipe")
        # the paper's paired test against every reference (docs/VALIDITY.md); m = 50 images and margin
        # tau = 0.1 chosen on seeds 5-9, measured on held-out seeds 10-19 (docs/VALIDITY.md); the
        # paper's values are m = 10 [R], tau = 0 [P]. The margin is per verdict column: the white-box
        # column's stylised log-loss scatters benign models less (reference spread <= 0.07, independent
        # models' delta mu about 0) and its multi-stage students sit 0.14-0.21 above the references, which
        # tau = 0.1 left undecided; 0.05 chosen on seed 0 before seeds 30-34 measured it
        # (docs/VALIDITY.md, "A margin per column"). m is per verdict column too: the white-box column reads
        # 100 images, since with the suspect's weights in hand an image costs nothing, while black-box and
        # baseline images are queries to the suspect. The white-box misses were students 0.10-0.15 above the
        # references at p = 0.01-0.09 with 50 images; benign models less than tau above only get safer.
        # Chosen on seeds 30-39 before seeds 40-44 measured it (fp32 and bf16: white-box caught source,
        # fine-tune, distillation and multi-stage 5/5, no independent flagged)
        # (docs/VALIDITY.md, "Images per column"; docs/HISTORY.md, "Held-out seeds 40-44")
        m={"white-box": 100, "black-box": 50, "baseline": 50},
        tau={"white-box": 0.05, "black-box": 0.1, "baseline": 0.1}, test="paired-all",
        # the black-box column's classifier: any-arch (one over every architecture and all references, the
        # one a suspect behind an API gets; docs/API.md) or per-arch (one per architecture, its references).
        # any-arch chosen on seeds 20-22 (bf16): source, fine-tune, distillation and multi-stage 3/3, no
        # independent flagged (per-arch: multi-stage 2/3), and reproduce.py trains 3 classifiers instead of 5
        # (docs/VALIDITY.md, "Any-architecture black-box classifier")
        black_box="any-arch",
        # the black-box column's features (constants.BLACK_BOX_FEATURES): MOVE's prediction shifts plus the
        # probability of the original's true label, since a model that answers the same for every input
        # (untrained) shifts as little as the victim; chosen on dev seeds 40-44 (bf16): untrained wrn16-1
        # flagged 0/150 (largest delta mu 0.081) against 1/150 (0.305) with prediction shifts alone, students
        # 5/5, no independent flagged (docs/VALIDITY.md, "Shifts of models that solve the task")
        black_box_feature="shift-true-label",
        # what reproduce.py verifies with (constants.METHODS): MOVE alone. Dataset Inference (--method both)
        # saw nothing on the embedded default, not even the source (docs/DATASET_INFERENCE.md, "Measured"),
        # and costs minutes per suspect, so it is not on by default
        method="move",
        # the white-box column's features (constants.WHITE_BOX) and whether their images get the training
        # transform: the log-loss on the stylised image, without the transform. On seeds 20-22 (bf16) it
        # detected distillation 3/3 and multi-stage 2/3, no independent model and no zero-shot student,
        # reference spread <= 0.07; the input gradient with two log-losses: 3/3, 2/3, no independent, all
        # zero-shot students, spread 0.08; the paper's weight signs 0/3, 0/3 and one independent flagged
        # (docs/VALIDITY.md, "White-box features")
        white_box=dict(feature="stylised-loss", augment=False),
    ),
    # Paper scale, one GPU. CIFAR-10 train is split disjointly: the paper's victim saw all 50k and the
    # attackers used other data [DI]; without that other data we split the 50k.
    "cifar10": dict(
        dataset="cifar10", gamma=0.1,                                  # [P]
        split=dict(victim=30000, attacker=15000, independent=5000),
        styled_test=1000,
        # style: not tuned at this scale (no CIFAR offline); fmnist's relative weights, see docs/STYLE.md
        style=dict(steps=200, lr=0.05, style_weight=1.0, content_weight=1.0, luminance=False,
                   image_size=64, style_scale=2),
        train=dict(epochs=50, lr=0.1, batch=128, **_SGD, **_REF),        # victim/benign: WRN-28-10
        attacks={
            "distillation": dict(epochs=50, lr=0.1, batch=1000, temperature=1.0, data="victim", **_REF),  # [DI]
            "fine-tune": dict(epochs=5, lr=0.01, batch=1000, **_REF),                                  # [DI]
            "label-query": dict(epochs=20, lr=0.1, batch=1000, **_REF),                                # [DI]
            "logit-query": dict(epochs=20, lr=0.1, batch=1000, **_REF),                                # [DI]
            "zero-shot": dict(iterations=80000, batch=128, student_steps=5, lr_g=1e-3, lr_s=0.1,
                              z_dim=100),  # budget [Z] 80k iterations; DFAD 5 student steps/gen step
        },
        query_data=("attacker", "natural"),  # as fmnist: the thief's data [DI]
        independents=[("wrn16-1", 101), ("wrn28-10", 102)],
        clf=dict(epochs=100, lr=0.01, batch=128, hidden_cap=1024),      # 100 epochs, lr 0.01 [R]
        # as fmnist, with its simulated thefts behind the black-box classifier (validated on fmnist only;
        # their extra GPU time is estimated in docs/PAPER_SCALE.md)
        clf_models=dict(victims=2, benigns=4, weak=[256, 512, 0, 0, 0, 0], thefts=("distillation", "multi-stage")),
        references=4,
        m=10, tau=0.0, test="paired-all",  # the paper's m [R] and tau [P]; fmnist's per-column m and tau not measured here
        black_box="any-arch",  # as fmnist
        black_box_feature="prediction-shift",  # MOVE's
        method="move",  # as fmnist (DI on a GPU box: --method both)
        white_box=PAPER_WHITE_BOX,  # fmnist's stylised-loss not measured at this scale
    ),
    "imagenet": dict(
        dataset="imagenet", gamma=0.1,                                 # [P]
        split=dict(victim=0.6, attacker=0.3, independent=0.1),         # fractions of train
        styled_test=500,
        style=dict(steps=200, lr=0.05, style_weight=1.0, content_weight=1.0, luminance=False,
                   image_size=224, style_scale=2),  # not tuned at this scale, see docs/STYLE.md
        train=dict(epochs=50, lr=0.1, batch=128, **_SGD, **_REF),
        attacks={
            "distillation": dict(epochs=50, lr=0.1, batch=256, temperature=1.0, data="victim", **_REF),
            "fine-tune": dict(epochs=5, lr=0.01, batch=256, **_REF),
            "label-query": dict(epochs=20, lr=0.1, batch=256, **_REF),
            "logit-query": dict(epochs=20, lr=0.1, batch=256, **_REF),
            "zero-shot": dict(iterations=20000, batch=64, student_steps=5, lr_g=1e-3, lr_s=0.1, z_dim=100),
        },
        query_data=("attacker", "natural"),  # as fmnist: the thief's data [DI]
        independents=[("resnet18-imgnet", 101), ("resnet34-imgnet", 102)],
        clf=dict(epochs=100, lr=0.01, batch=128, hidden_cap=1024),
        # as fmnist, with its simulated thefts behind the black-box classifier (validated on fmnist only;
        # their extra GPU time is estimated in docs/PAPER_SCALE.md)
        clf_models=dict(victims=2, benigns=4, weak=[256, 512, 0, 0, 0, 0], thefts=("distillation", "multi-stage")),
        references=4,
        m=10, tau=0.0, test="paired-all",  # the paper's m [R] and tau [P]; fmnist's per-column m and tau not measured here
        black_box="any-arch",  # as fmnist
        black_box_feature="prediction-shift",  # MOVE's
        method="move",  # as fmnist (DI on a GPU box: --method both)
        white_box=PAPER_WHITE_BOX,  # fmnist's stylised-loss not measured at this scale
    ),
}


def _changed(base, **changes):
    """A deep copy of preset `base` with `changes` merged in, dict by dict (a value None removes the key)."""
    out = copy.deepcopy(base)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _changed(out[k], **v)
        elif v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# A few hundred images end to end, fmnist's recipe with fewer epochs and steps; used by the tests.
PRESETS["smoke"] = _changed(
    PRESETS["fmnist"], split=dict(victim=1200, attacker=800, independent=600), styled_test=200, eval_test=500,
    style=dict(steps=20), train=dict(epochs=2), clf=dict(batch=64, hidden_cap=128),
    attacks={"fine-tune": dict(epochs=1), "zero-shot": dict(iterations=10, batch=64, lr_s=0.05)},
    clf_models=dict(subset_epochs=None, weak=[256, 512, 0]),  # one untrained negative: the path, not the count
    di_images=dict(fit=20, test=20))  # --method both: DI's regressor and test on 20 images per side (the path)


def get_preset(name, scale=1.0):
    """A copy of preset `name` for a run `scale` times as long.

    Any scale multiplies the epochs, iterations and style steps (at least 1 each). Below 1 it also
    shrinks the data by the same factor, so a training stage costs about scale^2 (epochs x images) of
    the full one: the split sizes (counts or fractions), the stylised test images, and the clean
    evaluation images (a count, else the fraction `scale` of the test set). Zero-shot has no data: its
    iterations shrink by scale^2 and its batch by scale, one factor more than the other stages,
    because at full size it already costs ~16x the victim's training (cifar10: 80k iterations of
    5 x 128 + 128 victim queries, ~72M forward passes, against 30k images x 50 epochs x ~3 passes).
    Floors keep every stage working: 10 stylised training images per model (the meta-classifier's
    80/20 split), 50 images per other split, m stylised test images (the test), 8 images per
    zero-shot batch (BatchNorm)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    if scale <= 0:
        raise UserError(f"--scale {scale} must be positive (e.g. 0.1 for a short run)")
    p = copy.deepcopy(PRESETS[name])
    p["name"], p["scale"] = name, scale
    kinds = list(p.get("query_data", ()))
    if not kinds or len(set(kinds)) < len(kinds) or not set(kinds) <= set(QUERY_DATA):
        raise UserError(f"preset {name!r}: query_data {kinds} must list distinct kinds of the query thieves' data, "
                        f"the default first, from: {', '.join(QUERY_DATA)}")

    def s(v, factor=scale, floor=1):
        return max(min(v, floor), int(round(v * factor)))  # never more than v because of the floor

    if scale != 1.0:
        p["train"]["epochs"] = s(p["train"]["epochs"])
        if p["clf_models"].get("subset_epochs"):
            p["clf_models"]["subset_epochs"] = s(p["clf_models"]["subset_epochs"])
        for a in p["attacks"].values():
            for k in ("epochs", "iterations"):
                if k in a:
                    a[k] = s(a[k])
        p["clf"]["epochs"] = s(p["clf"]["epochs"])
        p["style"]["steps"] = s(p["style"]["steps"])
    if scale < 1:
        zs = p["attacks"]["zero-shot"]
        zs["iterations"], zs["batch"] = s(zs["iterations"]), s(zs["batch"], floor=8)  # iterations: scale^2
        for k, v in p["split"].items():
            if isinstance(v, float) and v <= 1:
                p["split"][k] = v * scale  # a fraction of the training set (imagenet)
            else:
                p["split"][k] = s(v, floor=math.ceil(10 / p["gamma"]) if k == "victim" else 50)
        p["styled_test"] = s(p["styled_test"], floor=max(per_column(p["m"], c) for c in COLUMNS))
        p["eval_test"] = s(p["eval_test"], floor=100) if p.get("eval_test") else float(scale)
    return p


# Dataset Inference (Maini et al., ICLR 2021), the second witness (ownership/dataset_inference.py,
# docs/DATASET_INFERENCE.md). Values marked [DIc] are the DI code's (github.com/cleverhans-lab/
# dataset-inference, commit 24baf46: src/attacks.py rand_steps and mingd, src/params.py, the notebooks).
DI = dict(
    # Blind Walk: per norm, a random direction (l_inf: uniform +-0.005 per pixel; l2: Gaussian sd 0.005;
    # l1: Laplace scale 0.01), walked j = 1 .. steps times; 10 directions per image and norm [DIc]
    walk=dict(directions=10, steps=50, linf=0.005, l2=0.005, l1=0.01),
    # the walk's step sizes were made for CIFAR-10 [DIc] (its SVHN run doubles them and the steps); on other
    # data they are multiplied by walk_scale[dataset] (docs/DATASET_INFERENCE.md, "Step scale"). fmnist, seed-0
    # victim, 60 + 60 images, 3 directions: at scale 1, 78 / 71 / 29 % of the l_inf / l2 / l1 walks never left the
    # label within 50 steps; at 2, 62 / 35 / 12 %; at 4, 21 / 12 / 7 % (mean stop 21.4); at 8, 8 / 7 / 6 % but a
    # mean stop of 13 steps (coarse). 4: the smallest of these at which most walks of every norm flip
    walk_scale=dict(cifar10=1.0, imagenet=1.0, fmnist=4.0),  # fmnist: see the comment above
    # MinGD: fixed-step descent on (max logit - logit of the target), at most 500 steps; l_inf 0.001 x sign,
    # l2 0.01 x unit gradient, l1 alpha_l1 / k = 0.01 on the k = 100 largest coordinates, skipping pixels
    # within gap = 0.001 of the box that would be pushed out [DIc]
    mingd=dict(iters=500, linf=0.001, l2=0.01, l1=1.0, k=100, gap=0.001),
    # confidence regressor: 30 -> 100 -> ReLU -> 1 -> tanh, loss -mean((2y - 1) out), full-batch SGD lr 0.1,
    # 1000 steps, fitted on the victim alone [DIc, notebooks cells 10-12]
    regressor=dict(hidden=100, lr=0.1, steps=1000),
    # images per side (private, public) that fit the regressor and that test suspects; the DI code takes
    # 500 + 500 rows [DIc]; ours are smaller for the 2-core CPU (about 1,000 label queries per image)
    fit_images=300, test_images=150,
    m=10,  # images per side of one test [DIc, notebooks: m = 10]
)
