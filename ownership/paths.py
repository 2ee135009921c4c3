"""The on-disk naming rules of the reference, computed in one place.

    model/victim/vict-<arch>.pt          model/benign/benign-<arch>.pt
    model/attack/atta-<tag>-<arch>.pt    model/clf/gradsign-<dataset>-<arch>.pt
    model/clf/blackbox-<dataset>-<arch>.pt (ours: the black-box meta-classifier)
    model/independent/indep<k>-<arch>.pt (ours: models trained on data the victim never saw)
    data/<prefix>_seurat_<gamma%>/{train,test}/<class>/*.png
    gradients_set/<model file>/<transformed data folder>[/<split>]/g_f.npy
    prob/<dataset>/<mode>.npz
"""
import os
import re

from network import MODELS

from .features import FEATURES
from .presets import DATASETS

# mode -> (folder, file tag, which architecture: the victim's or the attackers')
ATTACK_TAGS = {"distillation": "d", "zero-shot": "df", "fine-tune": "finetune",
               "label-query": "label", "logit-query": "logit", "multi-stage": "dft"}


def arch_for_mode(dataset, mode):
    """Suspect architecture for a mode: fine-tune and source keep the victim's (WRN-28-10 on CIFAR),
    the other attacks use the attackers' (WRN-16-1) [P, Sec. 5.1]."""
    d = DATASETS[dataset]
    return d["victim_arch"] if mode in ("source", "fine-tune", "benign") else d["attacker_arch"]


def victim(model_dir, arch, tag=""):
    return os.path.join(model_dir, "victim", f"vict-{arch}{tag}.pt")


def benign(model_dir, arch, tag=""):
    return os.path.join(model_dir, "benign", f"benign-{arch}{tag}.pt")


def reference_tag(k):
    """The file tag of the k-th held-out benign reference (k = 1, 2, ...): -ref, -ref2, -ref3 ..."""
    return "-ref" if k == 1 else f"-ref{k}"


def weak_tag(k):
    """The file tag of the k-th weak benign model (k = 1, 2, ...), a negative of the meta-classifier."""
    return f"-weak{k}"


def _numbered(folder, stem, infix, first=None):
    """Files <stem><infix><n>.pt in `folder`, in the order of n; `first` is the n of a missing number."""
    pattern = re.escape(stem + infix) + (r"\d*" if first is not None else r"\d+") + r"\.pt"
    found = [f for f in os.listdir(folder) if re.fullmatch(pattern, f)] if os.path.isdir(folder) else []
    start = len(stem + infix)
    return [os.path.join(folder, f) for f in sorted(found, key=lambda f: int(f[start:-3] or first))]


def references(model_dir, arch):
    """The held-out benign references of `arch` that exist: benign-<arch>-ref.pt, -ref2.pt, -ref3.pt ..."""
    return _numbered(os.path.join(model_dir, "benign"), f"benign-{arch}", "-ref", first=1)


def weak_models(model_dir, arch):
    """The weak benign models of `arch` that exist: benign-<arch>-weak1.pt, -weak2.pt ..."""
    return _numbered(os.path.join(model_dir, "benign"), f"benign-{arch}", "-weak")


def with_seeds(path):
    """`path` (e.g. model/victim/vict-wrn16-1.pt) followed by its other-seed siblings ...-s1.pt, -s2.pt."""
    return [path] + _numbered(os.path.dirname(path), os.path.basename(path)[:-3], "-s")


def attack(model_dir, mode, arch, variant=""):
    """model/attack/atta-<tag>-<arch>[-<variant>].pt; variant: a query thief's data other than the preset's
    default (constants.QUERY_DATA), so that both kinds of query thief sit side by side."""
    return os.path.join(model_dir, "attack", f"atta-{ATTACK_TAGS[mode]}-{arch}{'-' + variant if variant else ''}.pt")


THEFT_TAG = "theft"  # steal.py --tag of the defender's simulated thefts: seeds that no attack uses


def theft(model_dir, teacher, mode, arch):
    """model/theft/<teacher file stem>-<ATTACK_TAGS[mode]>-<arch>.pt: a simulated theft by the defender,
    an `arch` student of the checkpoint `teacher` (the victim or a benign model)."""
    stem = os.path.basename(teacher)[:-3]
    return os.path.join(model_dir, "theft", f"{stem}-{ATTACK_TAGS[mode]}-{arch}.pt")


def thefts(model_dir, arch, teacher_role):
    """The simulated thefts with `arch` students that exist, of victims (teacher_role 'victim': the
    black-box classifiers' positives) or of benign models ('benign': negatives), in name order."""
    folder = os.path.join(model_dir, "theft")
    stem = {"victim": "vict", "benign": "benign"}[teacher_role]
    tags = "|".join(re.escape(t) for t in ATTACK_TAGS.values())
    pattern = re.escape(stem) + r"-.+-(" + tags + ")-" + re.escape(arch) + r"\.pt"
    found = [f for f in os.listdir(folder) if re.fullmatch(pattern, f)] if os.path.isdir(folder) else []
    return [os.path.join(folder, f) for f in sorted(found)]


def independent(model_dir, k, arch):
    return os.path.join(model_dir, "independent", f"indep{k}-{arch}.pt")


def clf(model_dir, dataset, arch, access="white-box"):
    """model/clf/gradsign-<dataset>-<arch>.pt or blackbox-<dataset>-<arch>.pt; black-box with arch None:
    blackbox-<dataset>.pt, the one classifier of any architecture (issue 16, for suspects behind an API)."""
    kind = "gradsign" if access == "white-box" else "blackbox"
    if arch is None:
        if access == "white-box":
            raise ValueError("a white-box meta-classifier belongs to one architecture; give arch")
        return os.path.join(model_dir, "clf", f"{kind}-{dataset}.pt")
    return os.path.join(model_dir, "clf", f"{kind}-{dataset}-{arch}.pt")


def archs_with(model_dir, role="victim"):
    """Architectures (names of network.MODELS) that have a model/<role>/<vict|benign>-<arch>.pt, sorted."""
    stem = {"victim": "vict", "benign": "benign"}[role]
    folder = os.path.join(model_dir, role)
    return sorted(a for a in MODELS if os.path.exists(os.path.join(folder, f"{stem}-{a}.pt")))


def all_references(model_dir, archs=None):
    """The held-out benign references (benign-<arch>-ref*.pt) of `archs` (default: every architecture
    with a benign model), architectures in name order: the order every black-box verification over all
    architectures takes them in (the 'paper' test reads the first)."""
    return [r for a in sorted(archs or archs_with(model_dir, "benign")) for r in references(model_dir, a)]


def styled_folder(dataset, gamma=0.1):
    return f"{DATASETS[dataset]['styled_prefix']}_seurat_{round(gamma * 100):d}%"


def styled_dir(data_dir, dataset, gamma=0.1):
    return os.path.join(data_dir, styled_folder(dataset, gamma))


def gradient_set(grad_dir, model_path, data_folder, split="train", feature="weight-signs"):
    """gradients_set/<model file>/<data folder>/g_f.npy (weight signs; g_x.npy: input gradients; g_l.npy:
    stylised log-losses: features.FEATURES[feature].file) for
    the train split (the reference's only one); other splits go one level deeper."""
    parts = [grad_dir, os.path.basename(model_path), os.path.basename(os.path.normpath(data_folder))]
    if split != "train":
        parts.append(split)
    return os.path.join(*parts, FEATURES[feature].file)


def prob(prob_dir, dataset, mode):
    return os.path.join(prob_dir, dataset, f"{mode}.npz")


def suspect_for_mode(model_dir, dataset, mode, k=1):
    """Default suspect checkpoint for --mode, following the reference naming."""
    arch = arch_for_mode(dataset, mode)
    if mode == "source":
        return victim(model_dir, arch)
    if mode == "benign":
        return benign(model_dir, arch)
    if mode == "independent":
        arch = _independent_arch(model_dir, k) or DATASETS[dataset]["attacker_arch"]
        return independent(model_dir, k, arch)
    return attack(model_dir, mode, arch)


def _independent_arch(model_dir, k):
    folder = os.path.join(model_dir, "independent")
    if os.path.isdir(folder):
        for f in sorted(os.listdir(folder)):
            if f.startswith(f"indep{k}-") and f.endswith(".pt"):
                return f[len(f"indep{k}-"):-3]
    return None
