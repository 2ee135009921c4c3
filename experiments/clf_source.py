"""Experiment: which images should train the meta-classifier? Uses the models of a finished reproduce run."""
import sys, json, os
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np, torch
from ownership import gradients, blackbox, metaclf, verify, paths
from common import detection_rate
from ownership.checkpoints import load_model
from ownership.data import load_styled
W = sys.argv[1]  # the --workdir of a finished `reproduce.py --preset fmnist` run; ds = "fmnist"; D = W + "/data"
M = W + "/model"
tr = load_styled(D, ds, 0.1, "train"); te = load_styled(D, ds, 0.1, "test")
tr_clean = blackbox.originals(tr, ds, D, "train"); te_clean = blackbox.originals(te, ds, D, "test")
h = len(te) // 2
A = te.subset(range(0, h)); B = te.subset(range(h, len(te)))
A_clean, B_clean = te_clean[:h], te_clean[h:]
archs = {"wrn16-1": ("wrn16-1",), "wrn10-1": ("wrn10-1",)}
suspects = {"wrn16-1": ["victim/vict-wrn16-1.pt", "attack/atta-finetune-wrn16-1.pt", "independent/indep2-wrn16-1.pt", "benign/benign-wrn16-1-ref.pt"],
            "wrn10-1": ["attack/atta-d-wrn10-1.pt", "attack/atta-df-wrn10-1.pt", "attack/atta-label-wrn10-1.pt",
                        "attack/atta-logit-wrn10-1.pt", "attack/atta-dft-wrn10-1.pt", "independent/indep1-wrn10-1.pt", "benign/benign-wrn10-1-ref.pt"]}
cache = {}
def feats(path, access, imgs, clean, tag, augment=True):
    key = (path, access, tag, augment)
    if key not in cache:
        model, _ = load_model(M + "/" + path)
        if access == "white-box":
            cache[key] = gradients.gradient_signs(model, imgs, ds, "cpu", augment=augment, seed=0)
        else:
            cache[key] = blackbox.features(model, imgs, clean, ds, "cpu", 4, 0)
    return cache[key]
out = {}
for arch in archs:
    pos = [f"victim/vict-{arch}.pt", f"victim/vict-{arch}-s1.pt"]; neg = [f"benign/benign-{arch}.pt", f"benign/benign-{arch}-s1.pt"]
    for access in ["white-box", "black-box"]:
        for src in ["train", "testA"]:
          for aug in ([True, False] if access == "white-box" else [True]):
            imgs, clean = (tr, tr_clean) if src == "train" else (A, A_clean)
            ck = metaclf.fit([feats(m, access, imgs, clean, src, aug) for m in pos], [feats(m, access, imgs, clean, src, aug) for m in neg],
                             epochs=15, lr=0.01, batch_size=128, hidden_cap=256, seed=0)
            ck["kind"] = access
            ref = metaclf.predict_proba(ck, feats(f"benign/benign-{arch}-ref.pt", access, B, B_clean, "B", aug))
            for s in suspects[arch]:
                p = metaclf.predict_proba(ck, feats(s, access, B, B_clean, "B", aug))
                r = verify.test(p, ref, 10, 0.0, "paper", 0)
                # 20 disjoint draws of m=10 from B: detection rate
                rate = detection_rate(p, ref)
                row = dict(arch=arch, access=access, src=src, aug=aug, suspect=os.path.basename(s), best_epoch=ck["best_epoch"], acc=ck["test_acc"],
                           mean_ps=float(p.mean()), mean_ref=float(ref.mean()), dmu_all=float(p.mean()-ref.mean()), p10=r["p_value"], rate50=float(rate))
                print(json.dumps(row), flush=True)
