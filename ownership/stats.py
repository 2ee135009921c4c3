"""Hypothesis tests on meta-classifier probabilities P(stolen).

paper_test      the paper's test: one-sided paired t-test of H0: mean(p_S - p_B) <= tau
                against H1: mean(p_S - p_B) > tau, on the same m images.
reference_test  the reference code's protocol: 40 draws of m = 10 images, a two-sided Welch t-test
                per draw, the harmonic mean of the 40 p-values; delta_mu is the mean difference.
"""
import numpy as np
from scipy import stats as st


def paired_test(p_s, p_b, tau=0.0):
    """One-sided paired t-test; returns dict(p_value, delta_mu, t, m, tau, test)."""
    d = np.asarray(p_s, np.float64) - np.asarray(p_b, np.float64)
    m = len(d)
    if m < 2:
        raise ValueError("the paired t-test needs at least 2 images")
    mean = d.mean()
    sd = d.std(ddof=1)
    if sd == 0:  # every difference equal: the t statistic is +-inf or undefined
        t = np.inf if mean > tau else (-np.inf if mean < tau else 0.0)
        p = 0.0 if mean > tau else 1.0
    else:
        t = (mean - tau) / (sd / np.sqrt(m))
        p = float(st.t.sf(t, m - 1))
    return dict(p_value=float(p), delta_mu=float(mean), t=float(t), m=m, tau=tau,
                test="paired one-sided t-test (paper)")


def welch_test(a, b):
    """Two-sided Welch t-test (unequal variances); returns (t, p)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    if se2 == 0:
        diff = a.mean() - b.mean()
        return (np.inf * np.sign(diff) if diff else 0.0), (0.0 if diff else 1.0)
    t = (a.mean() - b.mean()) / np.sqrt(se2)
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(t), float(2 * st.t.sf(abs(t), df))


def reference_test(p_s, p_b, m=10, draws=40, seed=0):
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
