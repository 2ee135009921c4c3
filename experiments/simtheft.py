"""Experiment: attacker-arch meta-classifier trained on the defender's simulated thefts (students distilled
from the victim) against students distilled from a benign model; verify the attack students."""
import sys, json, os
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np, torch
from network import get_model
from ownership import gradients, blackbox, metaclf, verify, attacks
from common import detection_rate
from ownership.checkpoints import load_model, save_checkpoint, model_record
from ownership.data import load_styled, role_data
from ownership.presets import get_preset
W = sys.argv[1]  # the --workdir of a finished `reproduce.py --preset fmnist` run; ds = "fmnist"; D = W + "/data"; M = W + "/model"
preset = get_preset("fmnist")
tr = load_styled(D, ds, 0.1, "train"); te = load_styled(D, ds, 0.1, "test")
tr_clean = blackbox.originals(tr, ds, D, "train"); te_clean = blackbox.originals(te, ds, D, "test")
mixed = role_data(preset, D, 0, "victim-mixed", 0.1)
cfg = preset["attacks"]["distillation"]
sims = {}
for i, (teacher, tag) in enumerate([("victim/vict-wrn16-1.pt", "simv"), ("benign/benign-wrn16-1.pt", "simb"),
                     ("victim/vict-wrn16-1-s1.pt", "simv2"), ("benign/benign-wrn16-1-s1.pt", "simb2")]):
    path = f"{M}/sim/{tag}-wrn10-1.pt"
    if not os.path.exists(path):
        t, _ = load_model(f"{M}/{teacher}")
        torch.manual_seed(1000 + i)
        s = attacks.distillation(t, get_model("wrn10-1", 10, 1), mixed, ds, cfg, "cpu", 1234 + i)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_checkpoint(path, model_record(s, "wrn10-1", 10, 1, ds, role="sim"))
    sims[tag] = path
def feats(path, access, imgs, clean):
    model, _ = load_model(path)
    if access == "white-box":
        return gradients.gradient_signs(model, imgs, ds, "cpu", seed=0)
    return blackbox.features(model, imgs, clean, ds, "cpu", 4, 0)
sus = ["attack/atta-d-wrn10-1.pt", "attack/atta-df-wrn10-1.pt", "attack/atta-label-wrn10-1.pt",
       "attack/atta-logit-wrn10-1.pt", "attack/atta-dft-wrn10-1.pt", "independent/indep1-wrn10-1.pt", "benign/benign-wrn10-1-ref.pt"]
configs = {"direct+sim": ([f"{M}/victim/vict-wrn10-1.pt", sims["simv"]], [f"{M}/benign/benign-wrn10-1.pt", sims["simb"]]),
           "sim only": ([sims["simv"], sims["simv2"]], [sims["simb"], sims["simb2"]]),
           "all": ([f"{M}/victim/vict-wrn10-1.pt", f"{M}/victim/vict-wrn10-1-s1.pt", sims["simv"], sims["simv2"]],
                   [f"{M}/benign/benign-wrn10-1.pt", f"{M}/benign/benign-wrn10-1-s1.pt", sims["simb"], sims["simb2"]])}
for access in ["white-box", "black-box"]:
    for name, (pos, neg) in configs.items():
        ck = metaclf.fit([feats(m, access, tr, tr_clean) for m in pos], [feats(m, access, tr, tr_clean) for m in neg],
                         epochs=15, lr=0.01, batch_size=128, hidden_cap=256, seed=0)
        ref = metaclf.predict_proba(ck, feats(f"{M}/benign/benign-wrn10-1-ref.pt", access, te, te_clean))
        for s in sus:
            p = metaclf.predict_proba(ck, feats(f"{M}/{s}", access, te, te_clean))
            rate = detection_rate(p, ref)
            print(f"{access:9} {name:10} {os.path.basename(s):24} ps={p.mean():.3f} ref={ref.mean():.3f} dmu={p.mean()-ref.mean():+.3f} rate={rate:.2f}", flush=True)
