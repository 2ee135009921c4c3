"""Verification: P(stolen) of a suspect and a benign reference on the same transformed images, then
the test. Used by ownership_verification.py and reproduce.py."""
import numpy as np

from . import blackbox, gradients, metaclf, stats
from .cli import UserError

ALPHA = 0.01  # [P]
TESTS = {"paper": "paired one-sided t-test against the first reference (paper)",
         "paired-all": "paired one-sided t-test against each benign reference, largest p",
         "spread": "model-level one-sided t-test against the benign references' means",
         "reference": "reference: Welch two-sided, harmonic mean of 40 draws"}
MIN_REFS = {"spread": 3}


def probabilities(model, clf_ck, images, dataset, device, batch_size=128, seed=0, clean_x=None):
    """P(stolen) for every image of `images`: white-box (gradient signs) or black-box (prediction
    shifts; `clean_x` are the original images), whichever the meta-classifier was trained on."""
    if clf_ck.get("kind") == "black-box":
        p = metaclf.predict_proba(clf_ck, blackbox.features(model, images, clean_x, dataset, device,
                                                            clf_ck["views"], seed), device)
        return _finite(p, clf_ck)
    if gradients.feature_dim(model) != clf_ck["d"]:
        raise UserError(f"the model gives {gradients.feature_dim(model)}-dim gradient vectors but the "
                        f"meta-classifier expects {clf_ck['d']} ({clf_ck.get('arch')}); use the classifier "
                        f"trained for this architecture (--c)")
    g = gradients.gradient_signs(model, images, dataset, device, batch_size, augment=True, seed=seed,
                                 desc="suspect gradients")
    return _finite(metaclf.predict_proba(clf_ck, g, device), clf_ck)


def _finite(p, clf_ck):
    """The model's features were finite (checked where they are made), so NaN here is the classifier's."""
    if not np.isfinite(p).all():
        raise UserError(f"NaN or Inf in the meta-classifier's probabilities (the {clf_ck.get('kind', 'white-box')} "
                        f"classifier for {clf_ck.get('arch')}); its weights are broken: retrain it with "
                        f"'python train_clf.py --type={clf_ck.get('arch')}'")
    return p


def test(p_s, p_b, m=10, tau=0.0, test_name="paper", seed=0, alpha=ALPHA, images=None):
    """Run the chosen test on the pool p_s against the benign reference pool p_b, or a list of them
    (same images, same order). All tests but `reference` see the same m seeded images. Returns the
    result dict. `images` (indices) replaces the seeded draw."""
    if isinstance(p_b, np.ndarray) and p_b.ndim == 2:  # one row per reference, as probs.npz stores them
        p_b = list(p_b)
    refs = [np.asarray(r) for r in (p_b if isinstance(p_b, (list, tuple)) else [p_b])]
    if len(refs) < MIN_REFS.get(test_name, 1):
        raise UserError(f"the {test_name!r} test needs at least {MIN_REFS[test_name]} benign references, got "
                        f"{len(refs)}; train more with 'python train_model.py --role benign --tag=-ref2' (-ref3 ...) "
                        f"or choose --test paper")
    n = len(p_s)
    if m > n:
        raise UserError(f"--m {m} is larger than the {n} transformed test images available; lower --m")
    if m < 2:
        raise UserError(f"--m {m}: the tests need at least 2 images")
    if test_name == "reference":
        r = stats.reference_test(p_s, refs[0], m=m, seed=seed)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(n, m, replace=False) if images is None else images)
        if test_name == "paper":
            r = stats.paired_test(p_s[idx], refs[0][idx], tau)
        elif test_name == "paired-all":
            r = stats.paired_all_test(p_s[idx], [b[idx] for b in refs], tau)
        elif test_name == "spread":
            r = stats.spread_test(p_s[idx], [b[idx] for b in refs])
        else:
            raise ValueError(f"unknown test {test_name!r}; one of {list(TESTS)}")
        r["images"] = idx.tolist()
    r["alpha"] = alpha
    r["verdict"] = "stolen" if r["p_value"] < alpha else "not stolen"
    return r


def detection_rate(p_s, p_b, m=10, test_name="paired-all", tau=0.0, seed=0, order=None, alpha=ALPHA):
    """Fraction of the disjoint draws of m images (consecutive blocks of `order`, default the pool's
    own order) in which the test gives p < alpha: the rate of one verification, estimated over images."""
    order = np.arange(len(p_s)) if order is None else order
    return float(np.mean([test(p_s, p_b, m, tau, test_name, seed, alpha, images=order[k * m:(k + 1) * m])["p_value"]
                          < alpha for k in range(len(p_s) // m)]))
