"""Shared by the experiment scripts: the detection rate of the paper's test over disjoint draws."""
import numpy as np

from ownership import verify


def detection_rate(p_s, p_b, m=10, alpha=verify.ALPHA):
    """Fraction of disjoint draws of m images (in order) where the paired test gives p < alpha."""
    return float(np.mean([verify.test(p_s[k * m:(k + 1) * m], p_b[k * m:(k + 1) * m], m, 0.0, "paper", 0)["p_value"]
                          < alpha for k in range(len(p_s) // m)]))
