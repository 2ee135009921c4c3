"""Detection and false-positive rates of the default test over m (images queried) and tau (margin),
recomputed from finished evaluate.py seeds' saved probabilities (no model is run).

    python experiments/m_tau.py results/fmnist/seeds 5 6 7 8 9
    python experiments/m_tau.py results/fmnist/seeds 5 6 7 8 9 --m 10 20 30 50 --tau 0 0.05 0.1 0.15

For every seed, suspect and access: the fraction of disjoint draws of m images (consecutive blocks of
the seed's image order, as evaluate.py draws them) in which the paired test against every reference
gives p < 0.01. Prints, per access, the mean over seeds and (in brackets) the worst seed: the lowest
rate for attacks, the highest for independent models.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ownership import verify  # noqa: E402

MODES = ["source", "fine-tune", "distillation", "zero-shot", "multi-stage", "logit-query", "label-query", "independent"]


def main(args):
    rates = {}
    for seed in args.seeds:
        probs = np.load(os.path.join(args.root, str(seed), "results", "probs.npz"))
        for k in sorted({k.rsplit(":", 1)[0] for k in probs.files}):
            _, mode, access = k.split(":")
            p_s, refs = probs[k + ":suspect"], probs[k + ":references"]
            order = np.random.default_rng(seed).permutation(len(p_s))
            for m in args.m:
                for tau in args.tau:
                    r = verify.detection_rate(p_s, refs, m, args.test, tau, seed=seed, order=order)
                    rates.setdefault((access, mode, m, tau), []).append(r)
    for access in ("white-box", "black-box"):
        print(f"\n{access}: mean over seeds (worst seed) of the rate over all draws; seeds {args.seeds}\n")
        print("| m | τ | " + " | ".join(MODES) + " |")
        print("|---|---|" + "---|" * len(MODES))
        for m in args.m:
            for tau in args.tau:
                cells = []
                for mode in MODES:
                    v = rates.get((access, mode, m, tau), [])
                    worst = max(v) if mode == "independent" else min(v)
                    cells.append(f"{np.mean(v):.3f} ({worst:.2f})" if v else "")
                print(f"| {m} | {tau} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="the seeds folder of evaluate.py, e.g. results/fmnist/seeds")
    p.add_argument("seeds", type=int, nargs="+")
    p.add_argument("--m", type=int, nargs="+", default=[10, 20, 30, 50])
    p.add_argument("--tau", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.15])
    p.add_argument("--test", default="paired-all", choices=[t for t in verify.TESTS if t != "reference"])
    main(p.parse_args())
