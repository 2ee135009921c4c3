"""Experiment: several held-out benign references instead of one. For a finished reproduce run (its
--workdir as argv[1], its --seed as argv[2]), train benign references -ref2 ... -ref<K> (argv[3], default
6) per architecture, then save P(stolen) of every suspect and every reference on the stylised test
pool, per access, to <workdir>/multi_ref.npz. experiments/multi_ref_tests.py compares tests on them.

    python experiments/multi_ref.py results/fmnist/seeds/0 0 6

Run in session 3 on the seed runs of the session-2 preset (2 benign models and one reference per
architecture; `git checkout 7d4797b` to remake them); the numbers are in docs/VALIDITY.md.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np

import train_model
from ownership import blackbox, paths, verify
from ownership.checkpoints import load_checkpoint, load_model
from ownership.data import role_data
from ownership.presets import DATASETS, get_preset

W, SEED = sys.argv[1], int(sys.argv[2])
K = int(sys.argv[3]) if len(sys.argv) > 3 else 6
preset = get_preset("fmnist")
ds = preset["dataset"]
D, M = os.path.join(W, "data"), os.path.join(W, "model")
archs = list(dict.fromkeys([DATASETS[ds]["victim_arch"], DATASETS[ds]["attacker_arch"]]))
common = ["--seed", str(SEED), "--gamma", str(preset["gamma"]), "--data-dir", D, "--model-dir", M,
          "--preset", "fmnist", "--resume"]
refs = {}
for arch in archs:
    refs[arch] = []
    for k in range(1, K + 1):
        path = paths.benign(M, arch, paths.reference_tag(k))
        if not os.path.exists(path):
            train_model.main(train_model.get_parser().parse_args(
                common + ["--role", "benign", "--arch", arch, f"--tag={paths.reference_tag(k)}"]))
        refs[arch].append(path)

rows = json.load(open(os.path.join(W, "results", "results.json")))["rows"]
images = role_data(preset, D, SEED, "styled-test", preset["gamma"])
clean_x = blackbox.originals(images, ds, D, "test")
out = {}
for access in ("white-box", "black-box"):
    for arch in archs:
        clf = load_checkpoint(paths.clf(M, ds, arch, access), "meta-classifier")
        models = [(f"ref{k + 1}", p) for k, p in enumerate(refs[arch])]
        models += [(f"{i}:{r['mode']}", os.path.join(W, r["suspect"])) for i, r in enumerate(rows) if r["arch"] == arch]
        for name, path in models:
            out[f"{access}:{arch}:{name}"] = verify.probabilities(load_model(path)[0], clf, images, ds, "cpu",
                                                                  seed=SEED, clean_x=clean_x)
np.savez(os.path.join(W, "multi_ref.npz"), **out)
print(f"wrote {W}/multi_ref.npz ({len(out)} probability vectors)")
