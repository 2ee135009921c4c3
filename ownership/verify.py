"""Verification, the one path: P(stolen) of a suspect and of held-out benign references on the same
stylised test images, then the protocol's test. ownership_verification.py, reproduce.py and
evaluate.py all go through `Protocol`, `Verifier` and `test`.

    protocol = Protocol.from_preset(get_preset("fmnist"), column="white-box")  # test, m, tau, alpha, chosen once
    verifier = Verifier(clf_path, reference_paths, images, "fmnist", device, protocol, seed=0, data_dir=...)
    record = verifier(suspect_model)                               # p_value, delta_mu, verdict, ...
"""
import dataclasses

import numpy as np

from . import blackbox, gradients, metaclf, stats, training
from .checkpoints import load_checkpoint, load_model
from .data import originals
from .constants import ALPHA, COLUMNS, TESTS, WHITE_BOX
from .errors import UserError
from .features import FEATURES
from .presets import DATASETS, PER_COLUMN, per_column

REFERENCE_M = 10      # the reference code draws 10 images per test [R]; its protocol keeps it
MIN_REFS = {"spread": 3}
NO_MARGIN = ("spread", "reference")  # tests without a margin tau


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a verdict is reached, chosen once and recorded with every result.

    test   one of constants.TESTS; m: images per test (int); tau: the paired test's margin, a P(stolen)
    difference in [0, 1) (None for the tests without one); alpha: the significance level."""
    test: str
    m: int
    tau: float | None
    alpha: float

    @classmethod
    def from_preset(cls, preset, test=None, m=None, tau=None, alpha=ALPHA, column=None):
        """The preset's protocol for the verdict column `column` (constants.COLUMNS: white-box, black-box,
        baseline); `test`, `m`, `tau`, `alpha` override it (None: the preset's). The preset's m and tau are
        each one number, or one per column (per_column). The reference protocol keeps its own m = 10 [R].
        Raises UserError for a tau given to a test without a margin, an unknown test, or m < 2."""
        test = test or preset["test"]
        if test not in TESTS:
            raise UserError(f"unknown test {test!r}; choose one of: {', '.join(TESTS)}")
        if m is None:
            m = REFERENCE_M if test == "reference" else per_column(preset["m"], column)
        if m < 2:
            raise UserError(f"--m {m}: the tests need at least 2 images")
        if test in NO_MARGIN:
            if tau:
                raise UserError(f"--tau {tau}: the {test!r} test has no margin; drop --tau or choose "
                                f"--test paired-all")
            tau = None
        elif tau is None:
            tau = per_column(preset["tau"], column)
        return cls(test, int(m), tau, alpha)

    def record(self):
        """The protocol as a JSON-ready dict, with the test's description."""
        return dict(dataclasses.asdict(self), description=TESTS[self.test])


def record_columns(protocols):
    """{column: Protocol} (same test and alpha) as one JSON-ready record: Protocol.record() with `m` and
    `tau` each one number where every column has the same, else {column: value} (results.json,
    validity-*.json)."""
    record = next(iter(protocols.values())).record()
    for key in PER_COLUMN:
        values = {c: getattr(p, key) for c, p in protocols.items()}
        if len(set(values.values())) > 1:
            record[key] = values
    return record


def protocols_from_record(record):
    """The inverse of record_columns: {column: Protocol} for every column of constants.COLUMNS."""
    fields = {f.name for f in dataclasses.fields(Protocol)}
    return {c: Protocol(**{k: per_column(v, c) if k in PER_COLUMN else v for k, v in record.items() if k in fields})
            for c in COLUMNS}


def describe(value):
    """A recorded m or tau for a reader: one number, or e.g. 'white-box 0.05, black-box 0.1, baseline 0.1'."""
    return ", ".join(f"{c} {v}" for c, v in value.items()) if isinstance(value, dict) else str(value)


def test(p_s, refs, protocol, *, seed, images=None):
    """The protocol's test of the suspect's P(stolen) `p_s` (N,) against the references' `refs`
    ((K, N) array or K arrays, same images in the same order). Every test but `reference` sees the
    same m images: a seeded draw, or `images` (indices). Returns dict(p_value, delta_mu, t, m, tau, k,
    test, alpha, verdict[, images]). Raises UserError for too few references or m above N."""
    refs = [np.asarray(r) for r in refs]
    need = MIN_REFS.get(protocol.test, 1)
    if len(refs) < need:
        raise UserError(f"the {protocol.test!r} test needs at least {need} benign references, got {len(refs)}; "
                        f"train more with 'python train_model.py --role benign --tag=-ref2' (-ref3 ...) or "
                        f"choose --test paired-all")
    n, m = len(p_s), protocol.m
    if m > n:
        raise UserError(f"--m {m} is larger than the {n} transformed test images available; lower --m")
    if protocol.test == "reference":
        r = stats.reference_test(p_s, refs[0], m=m, seed=seed)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(n, m, replace=False) if images is None else images)
        if protocol.test == "paper":
            r = stats.paired_test(p_s[idx], refs[0][idx], protocol.tau)
        elif protocol.test == "paired-all":
            r = stats.paired_all_test(p_s[idx], [b[idx] for b in refs], protocol.tau)
        else:
            r = stats.spread_test(p_s[idx], [b[idx] for b in refs])
        r["images"] = idx.tolist()
    r.update(alpha=protocol.alpha, verdict="stolen" if r["p_value"] < protocol.alpha else "not stolen")
    return r


def detection_rate(p_s, refs, protocol, *, seed, order):
    """Fraction of the disjoint draws of m images (consecutive blocks of `order`) in which the test
    gives p < alpha: the rate of one verification, estimated over images."""
    m = protocol.m
    return float(np.mean([test(p_s, refs, protocol, seed=seed, images=order[k * m:(k + 1) * m])["p_value"]
                          < protocol.alpha for k in range(len(p_s) // m)]))


def verifiers(columns, images, dataset, device, protocols, *, seed, data_dir, label_only=False, reduce=None):
    """{key: Verifier} for `columns` {key: (meta-classifier path or None, references)}, key = (arch,
    column) with column one of constants.COLUMNS and `protocols` {column: Protocol}: one Verifier per
    distinct (classifier, references, column), so the any-architecture black-box classifier
    (ownership.plan.verdict_files) is loaded and its references scored once for every architecture.
    `label_only` applies to the black-box column (Verifier), and so does `reduce` (answers.reducer: the
    rounding or top-k of an API, applied to the suspect's and the references' answers alike)."""
    made, out = {}, {}
    for key, (clf, refs) in columns.items():
        column = key[1]
        if (clf, tuple(refs), column) not in made:
            made[clf, tuple(refs), column] = Verifier(clf, refs, images, dataset, device, protocols[column], seed=seed,
                                                      data_dir=data_dir, label_only=label_only and column == "black-box")
            if reduce is not None and column == "black-box":
                made[clf, tuple(refs), column].reduce_like(reduce)
        out[key] = made[clf, tuple(refs), column]
    return out


def _finite(p, clf):
    """The model's features were finite (checked where they are made), so NaN here is the classifier's."""
    if not np.isfinite(p).all():
        raise UserError(f"NaN or Inf in the meta-classifier's probabilities (the {clf.get('kind', 'white-box')} "
                        f"classifier for {clf.get('arch')}); its weights are broken: retrain it with "
                        f"'python train_clf.py --type={clf.get('arch')}'")
    return p


class Verifier:
    """One meta-classifier and its held-out benign references, loaded once: the references' P(stolen)
    is computed at construction, then each call verifies one suspect against them.

    clf_path     a train_clf.py checkpoint (white-box: gradient signs, input gradients or stylised log-losses, as its `feature`,
                 with the training transform or not, as its `augment`; black-box: prediction shifts), or
                 None for the baseline: no meta-classifier, "P(stolen)" of an image is 1 when the model
                 classifies the stylised image correctly, else 0 (a model that learned the external
                 feature is right on stylised images far more often than a benign one)
    references   benign reference checkpoints (paths), at least one
    images       the stylised test set (ownership.data.ImageSet), the same for every model
    protocol     a Protocol; seed: the image draw and the augmentation draws of the features
    label_only   black-box: every model answers its top label only (one-hot vectors), as a label-only
                 API does; the references are then reduced the same way, like with like. Always so with a
                 classifier trained on top labels (train_clf.py --label-only)

    A black-box verifier also takes a suspect's answers instead of a model (`__call__(answers=...)`):
    its `queries` (uint8, blackbox.queries order) are what a prediction API is asked (ownership/api.py)."""

    def __init__(self, clf_path, references, images, dataset, device, protocol, *, seed, data_dir,
                 batch_size=128, made_by=None, label_only=False):
        self.clf = None if clf_path is None else load_checkpoint(clf_path, "meta-classifier", made_by)
        self.clf_path, self.references = clf_path, list(references)
        self.images, self.dataset, self.device = images, dataset, device
        self.protocol, self.seed, self.batch_size = protocol, seed, batch_size
        self.access = "baseline" if self.clf is None else self.clf.get("kind", "white-box")
        if label_only and self.access != "black-box":
            raise UserError(f"--label-only needs a black-box meta-classifier; {clf_path} is {self.access}")
        # a classifier trained on top labels (train_clf.py --label-only) reads only labels
        self.label_only = label_only or bool((self.clf or {}).get("label_only"))
        self.reduce = None  # black-box: the suspect API's rounding/top-k (answers.reducer), applied to every model
        # the classifier's features, made as its training sets were (white-box classifiers made before
        # input gradients: the paper's weight signs, with the transform; black-box ones made before the
        # choice: prediction shifts), and for a feature that needs them (input gradients) the stylised images'
        # clean originals
        clf = self.clf or {}
        self.feature = blackbox.feature_of(clf) if self.access == "black-box" else clf.get("feature") or WHITE_BOX[0]
        self.augment = True if clf.get("augment") is None else clf["augment"]
        self.originals = None
        if FEATURES[self.feature].originals:
            self.originals = originals(images, dataset, data_dir, "test")
        if self.access == "black-box":
            self.queries = blackbox.queries(images, originals(images, dataset, data_dir, "test"), dataset,
                                            self.clf["views"], seed)
        d = DATASETS[dataset]
        self.p_references = np.stack([
            self.probabilities(load_model(r, None, d["num_classes"], d["channels"], device, "reference model")[0])
            for r in self.references])

    def probabilities(self, model):
        """P(stolen) (N,) float64 of `model` on every stylised test image."""
        ck = self.clf
        if self.access == "baseline":
            pred = training.predict(model, self.images, self.dataset, self.device).argmax(1)
            return (pred == self.images.y).numpy().astype(np.float64)
        if self.access == "black-box":
            return self.from_answers(blackbox.model_probs(model, self.queries, self.dataset, self.device).numpy())
        dim = gradients.white_box_dim(model, self.feature, self.dataset)
        if dim != ck["d"]:
            raise UserError(f"the model gives {dim}-dim gradient vectors but the meta-classifier expects "
                            f"{ck['d']} ({ck.get('arch')}); use the classifier trained for this architecture (--c)")
        g = gradients.white_box_features(model, self.images, self.dataset, self.device, self.feature,
                                         self.batch_size, augment=self.augment, seed=self.seed,
                                         desc="suspect gradients", originals=self.originals)
        return _finite(metaclf.predict_proba(ck, g, self.device), ck)

    def answered(self, answers):
        """A model's answers to `queries` as the verification reads them: float32 (Q, num_classes)
        probability rows, or under label_only the one-hot rows of their top labels."""
        answers = np.asarray(answers, np.float32) if self.reduce is None else self.reduce(answers)
        return blackbox.one_hot(answers.argmax(1), answers.shape[1]).numpy() if self.label_only else answers

    def reduce_like(self, reduce):
        """Compare like with like: reduce every model's answers with `reduce` (the suspect API's form) and
        recompute the references' P(stolen)."""
        self.reduce, d = reduce, DATASETS[self.dataset]
        self.p_references = np.stack([self.probabilities(load_model(r, None, d["num_classes"], d["channels"],
                                                                    self.device, "reference model")[0])
                                      for r in self.references])

    def from_answers(self, answers):
        """P(stolen) (N,) from a model's answers to `queries` (blackbox.queries order)."""
        f = blackbox.features_from_probs(self.answered(answers), self.clf["views"], self.feature, self.images.y)
        return _finite(metaclf.predict_proba(self.clf, f, self.device), self.clf)

    def __call__(self, model=None, answers=None):
        """Verify `model` (or, black-box, its `answers` to `queries`): the test's record plus p_suspect
        (N,) and p_references (K, N)."""
        p_s = self.probabilities(model) if answers is None else self.from_answers(answers)
        r = test(p_s, self.p_references, self.protocol, seed=self.seed)
        r.update(access=self.access, p_suspect=p_s, p_references=self.p_references)
        if answers is not None:
            r["answers"] = self.answered(answers)
        return r
