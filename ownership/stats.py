"""Hypothesis tests on meta-classifier probabilities P(stolen).

paper_test      the paper's test: one-sided paired t-test of H0: mean(p_S - p_B) <= tau
                against H1: mean(p_S - p_B) > tau, on the same m images.
paired_all_test the paper's test against each of K benign references; the largest p (the suspect
                must beat every one of them: an intersection-union test, valid at alpha).
spread_test     model level: the suspect's mean P(stolen) against the K references' means, as a new
                draw from the benign models' distribution: t = (s - mean_b) / (sd_b sqrt(1 + 1/K)),
                one-sided, K - 1 degrees of freedom (a normal prediction interval). Accounts for the
                spread between benign models, which a test against one reference cannot see.
welch_greater   one-sided Welch t-test (Dataset Inference's test, ownership/dataset_inference.py)
reference_test  the reference code's protocol: 40 draws of m = 10 images, a two-sided Welch t-test
                per draw, the harmonic mean of the 40 p-values; delta_mu is the mean difference.
"""
import numpy as np
from scipy import stats as st


def paired_test(p_s, p_b, tau):
    """One-sided paired t-test; returns dict(p_value, delta_mu, t, m, tau, test). When every difference
    is equal the statistic is undefined: t is None and p is 0 or 1 by the sign of mean - tau."""
    d = np.asarray(p_s, np.float64) - np.asarray(p_b, np.float64)
    m = len(d)
    if m < 2:
        raise ValueError("the paired t-test needs at least 2 images")
    mean = d.mean()
    sd = d.std(ddof=1)
    if sd == 0:  # every difference equal: no t statistic
        t, p = None, (0.0 if mean > tau else 1.0)
    else:
        t = float((mean - tau) / (sd / np.sqrt(m)))
        p = float(st.t.sf(t, m - 1))
    return dict(p_value=float(p), delta_mu=float(mean), t=t, m=m, tau=tau,
                test="paired one-sided t-test (paper)")


def paired_all_test(p_s, refs, tau):
    """The paired test against each reference in `refs` (same images); the largest p decides."""
    if not len(refs):
        raise ValueError("paired_all_test needs at least one reference")
    worst = max((paired_test(p_s, r, tau) for r in refs), key=lambda r: r["p_value"])
    return dict(p_value=worst["p_value"], delta_mu=float(np.mean(p_s) - np.mean([np.mean(r) for r in refs])),
                t=worst["t"], m=len(p_s), tau=tau, k=len(refs),
                test=f"paired one-sided t-test against each of {len(refs)} references, largest p")


def spread_test(p_s, refs):
    """One-sided test that the suspect's mean exceeds the benign references' means (same images)."""
    k = len(refs)
    if k < 2:
        raise ValueError(f"spread_test needs at least 2 references, got {k}")
    s = float(np.mean(p_s))
    b = np.array([np.mean(r) for r in refs], np.float64)
    sd = b.std(ddof=1)
    diff = s - b.mean()
    if sd == 0:  # every reference has the same mean: no t statistic
        t, p = None, (0.0 if diff > 0 else 1.0)
    else:
        t = float(diff / (sd * np.sqrt(1 + 1 / k)))
        p = float(st.t.sf(t, k - 1))
    return dict(p_value=float(p), delta_mu=float(diff), t=t, m=len(p_s), k=k, tau=None,
                test=f"model-level one-sided t-test against {k} benign references")


def _welch(a, b):
    """Welch's t of mean(a) - mean(b) and its Welch-Satterthwaite degrees of freedom; (None, None) when
    both samples are constant (no t statistic)."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    if se2 == 0:
        return None, None
    t = (a.mean() - b.mean()) / np.sqrt(se2)
    return float(t), float(se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)))


def welch_test(a, b):
    """Two-sided Welch t-test (unequal variances); returns (t, p)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t, df = _welch(a, b)
    if t is None:  # both samples constant: no t statistic
        return None, (0.0 if a.mean() != b.mean() else 1.0)
    return t, float(2 * st.t.sf(abs(t), df))


def welch_greater(a, b):
    """One-sided Welch t-test of H0: mean(a) <= mean(b) against H1: mean(a) > mean(b), unequal variances
    (scipy.stats.ttest_ind(a, b, equal_var=False, alternative="greater")). Dataset Inference's test with
    a = the public images' scores, b = the private images' [Maini et al., ICLR 2021, notebooks cell 14].
    Returns dict(p_value, delta_mu = mean(a) - mean(b), t, df, m = (len(a), len(b))); both samples
    constant: t and df None, p 0 or 1 by the sign of delta_mu. Raises ValueError for fewer than 2 values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Welch test needs at least 2 values per sample, got {len(a)} and {len(b)}")
    t, df = _welch(a, b)
    diff = float(a.mean() - b.mean())
    p = (0.0 if diff > 0 else 1.0) if t is None else float(st.t.sf(t, df))
    return dict(p_value=p, delta_mu=diff, t=t, df=df, m=(len(a), len(b)), test="one-sided Welch t-test")


def reference_test(p_s, p_b, m, seed, draws=40):
    """The reference protocol: `draws` random draws of m images from each pool, Welch per draw,
    harmonic mean of the p-values (a zero p makes the harmonic mean 0)."""
    rng = np.random.default_rng(seed)
    p_s, p_b = np.asarray(p_s, np.float64), np.asarray(p_b, np.float64)
    ps, mus = [], []
    for _ in range(draws):
        a = p_s[rng.choice(len(p_s), m, replace=False)]
        b = p_b[rng.choice(len(p_b), m, replace=False)]
        ps.append(welch_test(a, b)[1])
        mus.append(a.mean() - b.mean())
    ps = np.asarray(ps)
    p = 0.0 if (ps == 0).any() else float(st.hmean(ps))
    return dict(p_value=p, delta_mu=float(np.mean(mus)), m=m, draws=draws, tau=None,
                test="reference: Welch two-sided, harmonic mean of 40 draws")
