"""Experiment: why do held-out benign models get such different black-box P(stolen)? Retrains the
black-box meta-classifier of finished reproduce runs (plus the references of experiments/multi_ref.py)
with and without the per-vector L2 normalisation, and with 2 or 4 benign models, then scores the
held-out references ref1, ref4, ref5, ref6 and every suspect on the stylised test pool.

    python experiments/bb_clf.py results/fmnist/seeds 0 1 2 3 4
    ACCESS=white-box python experiments/bb_clf.py results/fmnist/seeds 0 1 2 3 4   # same for gradient signs

Prints, per configuration, the detection rate over disjoint draws of 10 images of the paired test
against ref1 (paired-1), of the paired test against each held-out reference with the largest p
(paired-all4: the suspect must beat all of them) and of the model-level test against the 4 held-out references (spread-4,
ownership/stats.py), and the pool mean of each model.

Run in session 3 on the seed runs of the session-2 preset (2 benign models and one reference per
architecture; `git checkout 7d4797b` to remake them); the numbers are in docs/VALIDITY.md.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np

from ownership import blackbox, gradients, metaclf, paths, verify
from ownership.checkpoints import load_model
from ownership.data import load_styled, role_data
from ownership.presets import get_preset

ROOT, SEEDS = sys.argv[1], [int(s) for s in sys.argv[2:]]
preset = get_preset("fmnist")
ds, M_IMG, ALPHA = preset["dataset"], 10, 0.01
ACCESS = os.environ.get("ACCESS", "black-box")
CONFIGS = ({"L2 2v2b (shipped)": (True, 2), "raw 2v2b": (False, 2), "L2 2v4b": (True, 4), "raw 2v4b": (False, 4)}
           if ACCESS == "black-box" else {"2v2b (shipped)": (True, 2), "2v4b": (True, 4)})
HELD_OUT = ["-ref", "-ref4", "-ref5", "-ref6"]
rates, means = {}, {}
for seed in SEEDS:
    W = os.path.join(ROOT, str(seed))
    D, Mdir = os.path.join(W, "data"), os.path.join(W, "model")
    rows = json.load(open(os.path.join(W, "results", "results.json")))["rows"]
    tr = load_styled(D, ds, preset["gamma"], "train")
    tr_clean = blackbox.originals(tr, ds, D, "train")
    te = role_data(preset, D, seed, "styled-test", preset["gamma"])
    te_clean = blackbox.originals(te, ds, D, "test")
    for arch in ("wrn16-1", "wrn10-1"):
        def feats(path, imgs, clean):
            if ACCESS == "white-box":
                return gradients.gradient_signs(load_model(path)[0], imgs, ds, "cpu", seed=seed)
            return blackbox.features(load_model(path)[0], imgs, clean, ds, "cpu", 4, seed)
        pos = [feats(paths.victim(Mdir, arch, t), tr, tr_clean) for t in ("", "-s1")]
        negs = [feats(paths.benign(Mdir, arch, t), tr, tr_clean) for t in ("", "-s1", "-ref2", "-ref3")]
        tests = {f"ref{t[4:] or '1'}": feats(paths.benign(Mdir, arch, t), te, te_clean) for t in HELD_OUT}
        tests.update({f"{i}:{r['mode']}": feats(os.path.join(W, r["suspect"]), te, te_clean)
                      for i, r in enumerate(rows) if r["arch"] == arch})
        for name, (l2, nb) in CONFIGS.items():
            ck = metaclf.fit(pos, negs[:nb], epochs=20, lr=0.01, batch_size=128, hidden_cap=256, seed=seed, l2=l2)
            p = {k: metaclf.predict_proba(ck, f) for k, f in tests.items()}
            refs = [p[f"ref{t[4:] or '1'}"] for t in HELD_OUT]
            for k, pk in p.items():
                mode = k.split(":")[-1]
                means.setdefault((name, mode), []).append(round(float(pk.mean()), 2))
                if mode.startswith("ref"):
                    continue
                for label, test_name, against in (("paired-1", "paper", refs[0]), ("paired-all4", "paired-all", refs),
                                                  ("spread-4", "spread", refs)):
                    rates.setdefault((name, mode, label), []).append(
                        verify.detection_rate(pk, against, M_IMG, test_name, alpha=ALPHA))
        print(f"seed {seed} {arch} done", flush=True)

modes = list(dict.fromkeys(m for _, m, _ in rates))
for name in CONFIGS:
    print(f"\n{name}: detection rate over seeds {SEEDS} x draws of {M_IMG} (paired-1 / paired-all4 / spread-4)")
    for mode in modes:
        print(f"  {mode:14} " + " / ".join(f"{np.mean(rates[(name, mode, t)]):.2f}" for t in ("paired-1", "paired-all4", "spread-4"))
              + f"   pool means {means[(name, mode)]}")
    for r in ("ref1", "ref4", "ref5", "ref6"):
        print(f"  {r:14} pool means {means[(name, r)]}")
