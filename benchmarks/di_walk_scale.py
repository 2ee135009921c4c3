"""Blind Walk step scale: how many of the victim's walks never leave the true label within the steps.

    python benchmarks/di_walk_scale.py --victim model/victim/vict-wrn16-1.pt [--images 60] [--directions 3]
        [--scales 1 2 4 8]

Per scale of DI's step sizes (presets.DI walk), on --images private and --images public test images of
the fmnist preset's seed-0 sets (ownership.dataset_inference.di_sets): the share of walks per norm
(l_inf, l2, l1) that reached the cap, the mean stop step and the labels asked per image. The walk_scale
of presets.DI (fmnist) was chosen from its output (docs/DATASET_INFERENCE.md, "Step scale").
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ownership import dataset_inference as di  # noqa: E402
from ownership.checkpoints import load_model  # noqa: E402
from ownership.presets import DI, get_preset  # noqa: E402


def main(args):
    sets = di.di_sets(get_preset("fmnist"), args.data_dir, args.seed, fit=0, test=args.images)
    oracle = di.ModelOracle(load_model(args.victim)[0], "fmnist")
    cap = DI["walk"]["steps"] + 1
    for scale in args.scales:
        start = time.time()
        for side in ("private_test", "public_test"):
            s = sets[side]
            r = di.blind_walk(oracle, di.pixels(s), s.y, scale=scale, walk=dict(directions=args.directions),
                              seed=args.seed)
            capped = [round(c, 2) for c in (r["stops"] == cap).float().mean((0, 2)).tolist()]
            print(f"scale {scale} {side}: capped per norm {capped} mean stop {r['stops'].float().mean():.1f} "
                  f"labels/image {r['queries'].float().mean():.0f}")
        print(f"  {time.time() - start:.1f} s")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--victim", required=True)
    p.add_argument("--data-dir", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--directions", type=int, default=3)
    p.add_argument("--scales", type=float, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())
