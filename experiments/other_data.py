"""Experiment: does a benign model trained on the defender's other (public) data, as an extra negative,
stop the meta-classifiers from flagging independent models? Uses the models of a finished reproduce run
(its --workdir as argv[1]); trains benign-<arch>-o models on training images no split uses."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np
import torch

from network import get_model
from ownership import blackbox, gradients, metaclf, verify
from common import detection_rate
from ownership.checkpoints import load_model, model_record, save_checkpoint
from ownership.data import load_dataset, load_styled, split_indices
from ownership.presets import get_preset
from ownership.training import train

W = sys.argv[1]
ds, D, M = "fmnist", W + "/data", W + "/model"
preset = get_preset("fmnist")
full = load_dataset(ds, D)["train"]
used = torch.cat(list(split_indices(len(full), preset["split"], 0).values()))
free = torch.tensor(sorted(set(range(len(full))) - set(used.tolist())))
other = full.subset(free[torch.randperm(len(free), generator=torch.Generator().manual_seed(7))[:6000]].sort().values)
tr, te = load_styled(D, ds, 0.1, "train"), load_styled(D, ds, 0.1, "test")
tr_clean, te_clean = blackbox.originals(tr, ds, D, "train"), blackbox.originals(te, ds, D, "test")
for i, arch in enumerate(["wrn16-1", "wrn10-1"]):
    path = f"{M}/benign/benign-{arch}-o.pt"
    if not os.path.exists(path):
        torch.manual_seed(500 + i)
        m = train(get_model(arch, 10, 1), other, ds, device="cpu", seed=500 + i, **{k: v for k, v in preset["train"].items()})
        save_checkpoint(path, model_record(m, arch, 10, 1, ds, role="benign"))


def feats(path, access, imgs, clean):
    model, _ = load_model(path)
    if access == "white-box":
        return gradients.gradient_signs(model, imgs, ds, "cpu", seed=0)
    return blackbox.features(model, imgs, clean, ds, "cpu", 4, 0)


V, B = f"{M}/victim/vict-", f"{M}/benign/benign-"
sus = {"wrn16-1": ["victim/vict-wrn16-1.pt", "attack/atta-finetune-wrn16-1.pt", "independent/indep2-wrn16-1.pt"],
       "wrn10-1": ["attack/atta-d-wrn10-1.pt", "attack/atta-df-wrn10-1.pt", "attack/atta-label-wrn10-1.pt",
                   "attack/atta-logit-wrn10-1.pt", "attack/atta-dft-wrn10-1.pt", "independent/indep1-wrn10-1.pt"]}
for arch in ["wrn16-1", "wrn10-1"]:
    configs = {"as shipped": ([V + arch + ".pt", V + arch + "-s1.pt"], [B + arch + ".pt", B + arch + "-s1.pt"]),
               "+other": ([V + arch + ".pt", V + arch + "-s1.pt"], [B + arch + ".pt", B + arch + "-s1.pt", B + arch + "-o.pt"])}
    for access in ["white-box", "black-box"]:
        for name, (pos, neg) in configs.items():
            ck = metaclf.fit([feats(m, access, tr, tr_clean) for m in pos], [feats(m, access, tr, tr_clean) for m in neg],
                             epochs=20, lr=0.01, batch_size=128, hidden_cap=256, seed=0)
            ref = metaclf.predict_proba(ck, feats(f"{B}{arch}-ref.pt", access, te, te_clean))
            for s in sus[arch]:
                p = metaclf.predict_proba(ck, feats(f"{M}/{s}", access, te, te_clean))
                rate = detection_rate(p, ref)
                print(f"{arch:8} {access:9} {name:18} {os.path.basename(s):28} ps={p.mean():.3f} ref={ref.mean():.3f} "
                      f"dmu={p.mean() - ref.mean():+.3f} rate={rate:.2f}", flush=True)
