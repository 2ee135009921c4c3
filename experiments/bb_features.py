"""Experiment: black-box (MOVE) feature layouts. 'raw' concatenates softmax(x) - softmax(view(x')) per view
(what ships first); 'aligned' reorders each view's difference vector so that the true class comes first and
the other classes follow in descending order of the difference, so the classifier sees how much the true
class loses under the style, not which class it is. Uses the models of a finished reproduce run (argv[1]).
Prints, per suspect, mean P(stolen) against the held-out reference and the fraction of disjoint m=10 draws
with p < 0.01."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np
import torch

from ownership import blackbox, metaclf, verify
from common import detection_rate
from ownership.checkpoints import load_model
from ownership.data import load_styled

W = sys.argv[1]
ds, D, M = "fmnist", W + "/data", W + "/model"
tr, te = load_styled(D, ds, 0.1, "train"), load_styled(D, ds, 0.1, "test")
tr_clean, te_clean = blackbox.originals(tr, ds, D, "train"), blackbox.originals(te, ds, D, "test")


def align(f, y, c=10):
    f = torch.as_tensor(f).view(len(f), -1, c)
    true = f.gather(2, y.view(-1, 1, 1).expand(-1, f.shape[1], 1))
    rest = f.scatter(2, y.view(-1, 1, 1).expand(-1, f.shape[1], 1), float("-inf")).sort(2, descending=True).values[..., :c - 1]
    return torch.cat([true, rest], 2).flatten(1).numpy()


cache = {}


def feats(path, imgs, clean, layout):
    key = (path, id(imgs))
    if key not in cache:
        model, _ = load_model(path)
        cache[key] = blackbox.features(model, imgs, clean, ds, "cpu", 4, 0)
    f = cache[key]
    return f if layout == "raw" else align(f, imgs.y)


V, B = f"{M}/victim/vict-", f"{M}/benign/benign-"
sus = {"wrn16-1": ["victim/vict-wrn16-1.pt", "attack/atta-finetune-wrn16-1.pt", "independent/indep2-wrn16-1.pt",
                   "benign/benign-wrn16-1-o.pt"],
       "wrn10-1": ["attack/atta-d-wrn10-1.pt", "attack/atta-df-wrn10-1.pt", "attack/atta-label-wrn10-1.pt",
                   "attack/atta-logit-wrn10-1.pt", "attack/atta-dft-wrn10-1.pt", "independent/indep1-wrn10-1.pt",
                   "benign/benign-wrn10-1-o.pt"]}
for arch in ["wrn16-1", "wrn10-1"]:
    configs = {"-s1": ([V + arch + ".pt", V + arch + "-s1.pt"], [B + arch + ".pt", B + arch + "-s1.pt"])}
    for layout in ["raw", "aligned"]:
        for name, (pos, neg) in configs.items():
            ck = metaclf.fit([feats(m, tr, tr_clean, layout) for m in pos], [feats(m, tr, tr_clean, layout) for m in neg],
                             epochs=20, lr=0.01, batch_size=128, hidden_cap=256, seed=0)
            ref = metaclf.predict_proba(ck, feats(f"{B}{arch}-ref.pt", te, te_clean, layout))
            for s in sus[arch]:
                p = metaclf.predict_proba(ck, feats(f"{M}/{s}", te, te_clean, layout))
                rate = detection_rate(p, ref)
                print(f"{arch:8} {layout:8} {name:5} {os.path.basename(s):28} ps={p.mean():.3f} ref={ref.mean():.3f} "
                      f"dmu={p.mean() - ref.mean():+.3f} rate={rate:.2f}", flush=True)
