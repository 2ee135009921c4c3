"""Compare tests on the probabilities experiments/multi_ref.py saved, over the seeds of an evaluate run.

    python experiments/multi_ref_tests.py results/fmnist/seeds 0 1 2 3 4

Each seed's pool of stylised test images is cut into disjoint draws of m = 10; every test sees the
same draws. Detection rate = fraction of (seed, draw) pairs with p < 0.01 (for independents: the
false-positive rate).
  paired-1     the paper's paired test against one held-out reference (the current pipeline)
  paired-all   the paired test against each of the K references; the largest p (beat all of them)
  spread-K     model level: the suspect's mean P(stolen) on the draw against the K references' means,
               t = (s - mean_b) / (sd_b sqrt(1 + 1/K)), one-sided, K - 1 degrees of freedom
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ownership import verify  # noqa: E402

ROOT, SEEDS = sys.argv[1], [int(s) for s in sys.argv[2:]]
M, ALPHA = 10, 0.01


def tests(refs):
    """(label, test name, references) of each compared test."""
    K = len(refs)
    return [("paired-1", "paper", refs[0]), (f"paired-all{K}", "paired-all", refs)] + \
        [(f"spread-{k}", "spread", refs[:k]) for k in sorted({3, K})]


rates, scores = {}, {}
for seed in SEEDS:
    z = np.load(os.path.join(ROOT, str(seed), "multi_ref.npz"))
    for access in ("white-box", "black-box"):
        keys = [k for k in z.files if k.startswith(access)]
        for arch in sorted({k.split(":")[1] for k in keys}):
            refs = [z[k] for k in sorted(k for k in keys if k.split(":")[1] == arch and k.split(":")[2].startswith("ref"))]
            for k in keys:
                _, a, *name = k.split(":")
                if a != arch:
                    continue
                mode = name[-1]
                scores.setdefault((access, mode), []).append(round(float(z[k].mean()), 2))
                if mode.startswith("ref"):
                    continue
                for t, test_name, against in tests(refs):
                    rates.setdefault((access, mode, t), []).append(
                        verify.detection_rate(z[k], against, M, test_name, alpha=ALPHA))

test_names = sorted({t for _, _, t in rates}, key=lambda t: (t[0], t))
modes = list(dict.fromkeys(m for _, m, _ in rates))
for access in ("white-box", "black-box"):
    print(f"\n{access}: detection rate over seeds {SEEDS} x disjoint draws of {M}")
    print(f"{'mode':14}" + "".join(f"{t:>14}" for t in test_names))
    for mode in modes:
        print(f"{mode:14}" + "".join(f"{np.mean(rates[(access, mode, t)]):14.2f}" for t in test_names))
    print("mean P(stolen) on the whole pool, per model:")
    for (a, mode), v in scores.items():
        if a == access:
            print(f"  {mode:14} {v}")
