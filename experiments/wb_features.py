"""Experiment: permutation-invariant white-box features on existing seed artefacts.
python experiments/wb_features.py DIR [DIR...]  -> DIR/wbfeat/<model>.<split>.npz  (norm_s, norm_o, ig, loss_s, loss_o, ig_o)"""
import os, sys, glob, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np, torch, torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from ownership.checkpoints import load_model
from ownership.data import load_styled, normalise
from ownership import blackbox
torch.set_num_threads(2)

def per_sample(model, x, y):
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    def loss(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))
    gp, gx = vmap(grad(loss, argnums=(0, 1)), in_dims=(None, 0, 0))(params, x, y)
    norms = torch.stack([gp[k].flatten(1).norm(dim=1) for k in params], 1)
    with torch.no_grad():
        l = F.cross_entropy(model(x), y, reduction="none")
    return norms, gx.flatten(1), l

def feats(model, xu, y, bs=100):
    out = {"norm": [], "ig": [], "loss": []}
    for i in range(0, len(xu), bs):
        x = normalise(xu[i:i+bs], "fmnist")
        n, g, l = per_sample(model, x, y[i:i+bs])
        out["norm"].append(n); out["ig"].append(g); out["loss"].append(l)
    return {k: torch.cat(v).numpy() for k, v in out.items()}

for d in sys.argv[1:]:
    os.makedirs(f"{d}/wbfeat", exist_ok=True)
    data = f"{d}/data"
    sets = {}
    for split in ("train", "test"):
        s = load_styled(data, "fmnist", 0.1, split)
        sets[split] = (s.x, blackbox.originals(s, "fmnist", data, split), s.y)
    t0 = time.time()
    models = sorted(glob.glob(f"{d}/model/*/*.pt"))
    for m in models:
        if "/clf/" in m: continue
        name = os.path.basename(m)[:-3]
        out = f"{d}/wbfeat/{name}.npz"
        if os.path.exists(out) and "train_ig_o" in np.load(out).files: continue
        model, _ = load_model(m, None, 10, 1, "cpu", "m")
        r = {}
        for split, (xs, xo, y) in sets.items():
            a, b = feats(model, xs, y), feats(model, xo, y)
            r.update({f"{split}_norm_s": a["norm"], f"{split}_norm_o": b["norm"], f"{split}_ig": a["ig"],
                      f"{split}_loss_s": a["loss"], f"{split}_loss_o": b["loss"], f"{split}_ig_o": b["ig"]})
        np.savez(out, **r)
    print(d, len(models), f"{time.time()-t0:.0f}s", flush=True)
