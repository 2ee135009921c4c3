"""Negative control: is a *weak* independent model (never near the victim's data, barely trained) called
stolen? Zero-shot students are weak (about 23 % clean accuracy) and the black-box test flags them;
this checks whether weakness alone is enough. Uses a finished reproduce run (its --workdir as argv[1],
its --seed as argv[2]) with the current protocol (4 held-out references per architecture).

    python experiments/weak_independent.py . 0

Trains `wrn10-1` models on the first n images of the independent split for one epoch (n = 256, 512,
1024, seeds 900+), then runs the default test (paired test against each reference, largest p) on
every disjoint draw of m stylised test images (the preset's m and tau), both accesses, and prints the
rate of p < 0.01.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np
import torch

from network import get_model
from ownership import blackbox, paths, verify
from ownership.checkpoints import load_checkpoint, load_model
from ownership.data import role_data
from ownership.presets import get_preset
from ownership.training import accuracy, train

W, SEED = sys.argv[1], int(sys.argv[2])
preset = get_preset("fmnist")
ds, D, M, ARCH = preset["dataset"], os.path.join(W, "data"), os.path.join(W, "model"), "wrn10-1"
indep = role_data(preset, D, SEED, "independent")
test = role_data(preset, D, SEED, "test")
images = role_data(preset, D, SEED, "styled-test", preset["gamma"])
clean_x = blackbox.originals(images, ds, D, "test")
refs = [load_model(p)[0] for p in paths.references(M, ARCH)]
m = preset["m"]
for access in ("white-box", "black-box"):
    clf = load_checkpoint(paths.clf(M, ds, ARCH, access), "meta-classifier")
    p_b = [verify.probabilities(r, clf, images, ds, "cpu", seed=SEED, clean_x=clean_x) for r in refs]
    for k, n in enumerate((256, 512, 1024)):
        torch.manual_seed(900 + k)
        model = train(get_model(ARCH, 10, 1), indep.subset(range(n)), ds, epochs=1, lr=0.1, batch=128,
                      seed=900 + k, desc=f"weak {n}")
        acc = accuracy(model, test, ds)
        sacc = accuracy(model, images, ds)
        p_s = verify.probabilities(model, clf, images, ds, "cpu", seed=SEED, clean_x=clean_x)
        rate = verify.detection_rate(p_s, p_b, m, "paired-all", preset["tau"], seed=SEED)
        print(f"{access:9} weak wrn10-1 on {n:4} images: clean acc {acc:.3f}, stylised acc {sacc:.3f}, "
              f"mean P(stolen) {p_s.mean():.3f} (references {np.mean(p_b):.3f}), flagged in {rate:.2f} of draws",
              flush=True)
