"""python experiments/wb_analyse.py VARIANT[,..] DIR... : per-variant detection table on cached wbfeat features."""
import os, sys, json
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np, torch
from ownership import metaclf
from ownership.verify import Protocol, test
torch.set_num_threads(int(os.environ.get("T", "2")))
EPS = 1e-12
PROT = Protocol("paired-all", 50, 0.1, 0.01)

def feature(z, split, v):
    ln = lambda a: np.log(a + EPS)
    if v == "norm": return ln(z[f"{split}_norm_s"]), False
    if v == "shift": return ln(z[f"{split}_norm_s"]) - ln(z[f"{split}_norm_o"]), False
    if v == "both": return np.concatenate([ln(z[f"{split}_norm_s"]), ln(z[f"{split}_norm_s"]) - ln(z[f"{split}_norm_o"])], 1), False
    if v == "ig": return z[f"{split}_ig"], True
    if v == "igraw": return z[f"{split}_ig"], False
    if v == "iglog":
        g = z[f"{split}_ig"]; n = np.linalg.norm(g, axis=1, keepdims=True)
        return np.concatenate([g / np.maximum(n, EPS), ln(n)], 1), False
    if v == "igl": return np.concatenate([z[f"{split}_ig"], ln(z[f"{split}_loss_s"])[:, None]], 1), False
    if v == "igpair": return np.concatenate([z[f"{split}_ig"], z[f"{split}_ig_o"]], 1), False
    if v == "igdiff": return z[f"{split}_ig"] - z[f"{split}_ig_o"], False
    if v == "igl2": return np.concatenate([z[f"{split}_ig"], ln(z[f"{split}_loss_s"])[:, None], ln(z[f"{split}_loss_o"])[:, None]], 1), False
    if v == "igsign": return np.sign(z[f"{split}_ig"]), True
    if v == "loss": return np.stack([ln(z[f"{split}_loss_s"]), ln(z[f"{split}_loss_o"])], 1), False
    if v == "losss": return ln(z[f"{split}_loss_s"])[:, None], False
    raise KeyError(v)

def run(d, v, anyarch, weak):
    res = json.load(open(f"{d}/results/results.json"))
    seed = res["seed"]
    F = lambda name, split: feature(np.load(f"{d}/wbfeat/{name}.npz"), split, v)
    out = []
    archs = ["wrn16-1", "wrn10-1"]
    groups = [archs] if anyarch else [[a] for a in archs]
    for g in groups:
        pos = [f"vict-{a}{t}" for a in g for t in ("", "-s1")]
        neg = [f"benign-{a}{t}" for a in g for t in ("", "-s1", "-s2", "-s3")] + \
              ([f"benign-{a}-weak{k}" for a in g for k in (1, 2)] if weak else [])
        refs = [f"benign-{a}-ref{t}" for a in g for t in ("", "2", "3", "4")]
        ps = [F(n, "train")[0].astype(np.float32) for n in pos]
        ns = [F(n, "train")[0].astype(np.float32) for n in neg]
        l2 = F(pos[0], "train")[1]
        kw = dict(epochs=20, lr=0.01, batch_size=128, hidden_cap=256, seed=seed, l2=l2)
        ck = metaclf.fit(ps, ns, **kw)
        lev = metaclf.model_level_auc(ps, ns, **kw)
        pr = np.stack([metaclf.predict_proba(ck, F(r, "test")[0].astype(np.float32)) for r in refs])
        means = pr.mean(1)
        info = dict(arch="+".join(g), auc=lev["auc"], spread=float(means.max() - means.min()))
        for row in res["rows"]:
            if row["arch"] not in g: continue
            name = os.path.basename(row["suspect"])[:-3]
            p = metaclf.predict_proba(ck, F(name, "test")[0].astype(np.float32))
            t = test(p, pr, PROT, seed=seed)
            out.append(dict(mode=row["mode"], name=name, p=t["p_value"], dmu=t["delta_mu"],
                            bl=row["baseline"]["p_value"], wb=row["white-box"]["p_value"]))
        out.append(info)
    return out

if __name__ == "__main__":
    variants, dirs = sys.argv[1].split(","), sys.argv[2:]
    anyarch = os.environ.get("ANY") == "1"; weak = os.environ.get("WEAK") == "1"
    for v in variants:
        det, n, info = {}, {}, []
        for d in dirs:
            for r in run(d, v, anyarch and (v.startswith("ig") or v.startswith("loss")), weak):
                if "mode" not in r: info.append(r); continue
                det[r["mode"]] = det.get(r["mode"], 0) + (r["p"] < 0.01); n[r["mode"]] = n.get(r["mode"], 0) + 1
                if r["mode"] in ("independent", "distillation", "multi-stage") :
                    print(f"  {v} {d.split('/')[-2][-4:]}/{d.split('/')[-1]} {r['mode']:13s} {r['name']:22s} p={r['p']:.2e} dmu={r['dmu']:+.3f} (wb {r['wb']:.1e}, bl {r['bl']:.1e})")
        print(f"== {v} any={anyarch} weak={weak}: " + ", ".join(f"{k} {det[k]}/{n[k]}" for k in det))
        print("   auc/spread: " + "; ".join(f"{i['arch']} {i['auc']:.2f}/{i['spread']:.2f}" for i in info), flush=True)
