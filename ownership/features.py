"""The external features a meta-classifier reads: one registry, one entry per feature (issue 29).

Each entry says which access reads it, what one row holds (per stylised image), where a white-box
feature is stored and how, and the source of the choice. constants.WHITE_BOX and
constants.BLACK_BOX_FEATURES are this registry's names, in its order (the paper's or MOVE's first);
every stage imports them from there. A new feature is one entry here and its computation
(white-box: ownership/gradients.white_box_features; black-box: ownership/blackbox.features_from_probs).

This module imports nothing of the project: it sits under constants.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    """One external feature.

    name        the --feature value (train_clf.py, gradientset.py, presets: white_box.feature, black_box_feature)
    access      "white-box" (read with the model's weights in hand) or "black-box" (predictions only)
    computes    what one row holds, per stylised image
    source      where the choice comes from: the paper [P], the reference code [R], MOVE, or ours with
                the docs section that measured it
    file        white-box: the gradient set's file in gradients_set/<model file>/<data folder>/
    dtype       white-box: the numpy dtype the gradient set is stored in
    l2          train_clf.py --l2 auto L2-normalises each row (the reference's classifier on weight signs)
    originals   the feature needs the stylised images' clean originals (data.originals)
    """
    name: str
    access: str
    computes: str
    source: str
    file: str | None = None
    dtype: str | None = None
    l2: bool = False
    originals: bool = False


FEATURES = {f.name: f for f in (
    Feature("weight-signs", "white-box",
            "signs of the per-sample loss gradient w.r.t. the weights, reduced by the reference's rule "
            "(int8, ownership/gradients.reduction_plan)",
            "the paper's white-box meta-classifier and the reference code's reduction rule [P, R]", file="g_f.npy", dtype="int8", l2=True),
    Feature("input-gradient", "white-box",
            "the per-sample loss gradient w.r.t. the input image, then the log-losses on the stylised image and "
            "its clean original (C*H*W + 2 floats); it does not depend on how a model's neurons are ordered",
            "ours: docs/VALIDITY.md, \"White-box features\"", file="g_x.npy", dtype="float32", originals=True),
    Feature("stylised-loss", "white-box",
            "the per-sample log-loss on the stylised image alone, no gradient (1 float)",
            "ours, the fmnist default: it did as well on models never seen, with no false positive "
            "(docs/VALIDITY.md, \"White-box features\")", file="g_l.npy", dtype="float32"),
    Feature("prediction-shift", "black-box",
            "the softmax on the original minus that on each stylised view (views x classes floats)",
            "MOVE's black-box variant (the extended paper; it published no code, this follows its description)"),
    Feature("shift-true-label", "black-box",
            "prediction-shift, then the softmax probability the model gives the original's true label (1 float "
            "more): a model that does not solve the task (e.g. untrained) can shift as little as the victim "
            "but is not right",
            "ours: docs/VALIDITY.md, \"Shifts of models that solve the task\""),
)}


def names(access):
    """The names of the features `access` ("white-box" or "black-box") reads, in registry order."""
    return tuple(n for n, f in FEATURES.items() if f.access == access)
