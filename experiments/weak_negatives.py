"""Experiment: do weak benign models, as extra negatives of the black-box meta-classifier, stop weak
independent models from looking stolen, and what does it cost on the students? One finished reproduce
run (its --workdir as argv[1], --seed as argv[2]), architecture wrn10-1 (the students').

    python experiments/weak_negatives.py . 0

Retrains the black-box classifier as reproduce.py did before the weak negatives became the default
(2 victims against the 4 benign models, raw features) and once more with two weak benign models added
as negatives (one epoch on the first 256 and 512 images of the victim's clean part, as reproduce.py
now does with its own seeds), then runs the preset's test (paired test against each of the 4 held-out
references, largest p, the preset's m and tau) on every disjoint draw of m stylised test images.
Run on seeds 10-14 of evaluate.py (made without weak negatives) in docs/VALIDITY.md.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np
import torch

from network import get_model
from ownership import blackbox, metaclf, paths, verify
from ownership.checkpoints import load_model
from ownership.data import load_styled, role_data
from ownership.presets import get_preset
from ownership.training import train

W, SEED = sys.argv[1], int(sys.argv[2])
preset = get_preset("fmnist")
ds, D, M, ARCH, m = preset["dataset"], os.path.join(W, "data"), os.path.join(W, "model"), "wrn10-1", preset["m"]
tr = load_styled(D, ds, preset["gamma"], "train")
tr_clean = blackbox.originals(tr, ds, D, "train")
te = role_data(preset, D, SEED, "styled-test", preset["gamma"])
te_clean = blackbox.originals(te, ds, D, "test")


def weak(data, n, seed):
    torch.manual_seed(seed)
    return train(get_model(ARCH, 10, 1), data.subset(range(n)), ds, epochs=1, lr=0.1, batch=128, seed=seed,
                 desc=f"weak {n}")


def feats(model, imgs, clean):
    return blackbox.features(model, imgs, clean, ds, "cpu", 4, SEED)


clean_part = role_data(preset, D, SEED, "victim-clean")
indep = role_data(preset, D, SEED, "independent")
pos = [feats(load_model(paths.victim(M, ARCH, t))[0], tr, tr_clean) for t in ("", "-s1")]
neg = [feats(load_model(paths.benign(M, ARCH, t))[0], tr, tr_clean) for t in ("", "-s1", "-s2", "-s3")]  # not -weak*
weak_neg = [feats(weak(clean_part, n, 950 + k), tr, tr_clean) for k, n in enumerate((256, 512))]
rows = json.load(open(os.path.join(W, "results", "fmnist", "results.json")
                      if os.path.exists(os.path.join(W, "results", "fmnist", "results.json"))
                      else os.path.join(W, "results", "results.json")))["rows"]
suspects = {f"{r['mode']}": load_model(os.path.join(W, r["suspect"]))[0] for r in rows if r["arch"] == ARCH}
suspects.update({f"weak independent {n}": weak(indep, n, 900 + k) for k, n in enumerate((256, 512, 1024))})
refs = [load_model(p)[0] for p in paths.references(M, ARCH)]
test_feats = {k: feats(v, te, te_clean) for k, v in suspects.items()}
ref_feats = [feats(r, te, te_clean) for r in refs]
for name, negs in (("without weak negatives", neg), ("+ 2 weak benign negatives", neg + weak_neg)):
    ck = metaclf.fit(pos, negs, epochs=preset["clf"]["epochs"], lr=preset["clf"]["lr"], batch_size=preset["clf"]["batch"],
                     hidden_cap=preset["clf"]["hidden_cap"], seed=SEED, l2=False)
    p_b = [metaclf.predict_proba(ck, f) for f in ref_feats]
    print(f"\n{name}: held-out acc {ck['test_acc']:.3f}, references' mean P(stolen) {np.mean(p_b):.3f}")
    for k, f in test_feats.items():
        p_s = metaclf.predict_proba(ck, f)
        rate = verify.detection_rate(p_s, p_b, m, "paired-all", preset["tau"], seed=SEED)
        print(f"  {k:24} mean P(stolen) {p_s.mean():.3f}  flagged in {rate:.2f} of draws", flush=True)
