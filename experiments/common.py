"""Shared by the experiment scripts: the detection rate of the paper's test over disjoint draws."""
from ownership import verify


def detection_rate(p_s, p_b, m=10, alpha=verify.ALPHA):
    """Fraction of disjoint draws of m images (in order) where the paper's paired test gives p < alpha."""
    return verify.detection_rate(p_s, p_b, m, "paper", alpha=alpha)
