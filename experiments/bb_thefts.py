"""Dev experiment of docs/VALIDITY.md, "Simulated thefts behind the black-box classifier": on a finished
evaluate.py seed (its models and results), train the defender's simulated thefts as reproduce.py does
(steal.py --tag theft), a control student (the multi-stage recipe from an independent model, on the
attacker's data), the any-arch black-box classifier with the thefts added to its models, and verify every
suspect, the thefts, the control and 30 untrained models per architecture with the default test.

    python experiments/bb_thefts.py fp32 45     # results/fmnist/seeds-fp32/45 -> experiments/bb_thefts-fp32-45.json
"""
import os, sys, json, time
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import torch
from network import get_model
from ownership import seeds, paths
from ownership.checkpoints import load_model, load_checkpoint
from ownership.data import role_data
from ownership.presets import get_preset
from ownership.verify import Verifier, Protocol
import train_clf, steal

path, seed = sys.argv[1], int(sys.argv[2])
amp = "none" if path == "fp32" else "auto"
W = os.environ.get("SEEDS_ROOT", os.path.join(REPO, "results", "fmnist")) + f"/seeds-{path}/{seed}"
M, D = f"{W}/model", f"{W}/data"
preset = get_preset("fmnist", 1)
dev = torch.device("cpu")
common = ["--seed", str(seed), "--gamma", str(preset["gamma"]), "--data-dir", D, "--model-dir", M, "--amp", amp]
t0 = time.time()

def run_steal(mode, teacher, arch, out, tag, extra=()):
    if not os.path.exists(out):
        steal.main(steal.get_parser().parse_args(common + ["--mode", mode, "--victim", teacher, "--arch", arch,
                                                           "--tag", tag, "--out", out, *extra]))

sims = dict(pos=[], neg=[])
for arch in ("wrn16-1", "wrn10-1"):
    for label, teacher in (("pos", f"{M}/victim/vict-wrn16-1.pt"), ("neg", f"{M}/benign/benign-wrn16-1.pt")):
        first = paths.theft(M, teacher, "distillation", arch)
        run_steal("distillation", teacher, arch, first, "theft")
        second = paths.theft(M, teacher, "multi-stage", arch)
        run_steal("multi-stage", teacher, arch, second, "theft", ["--student", first, "--fine-tune-data", "victim-clean"])
        sims[label] += [first, second]
# control: the multi-stage attack's recipe on the attacker's data, from a teacher nobody marked (an independent model)
teacher = f"{M}/independent/indep2-wrn16-1.pt"
c1, ctrl = f"{M}/theft/ctrl-d-wrn10-1.pt", f"{M}/theft/ctrl-dft-wrn10-1.pt"
run_steal("distillation", teacher, "wrn10-1", c1, "ctrl")
run_steal("multi-stage", teacher, "wrn10-1", ctrl, "ctrl", ["--student", c1])
print("students", round(time.time() - t0), "s", flush=True)

res = json.load(open(f"{W}/results/results.json"))
bb = res["classifiers"]["wrn10-1"]["black-box"]
pos = [f"{W}/{p}" for p in bb["trained_on"]["pos"]] + sims["pos"]
neg = [f"{W}/{p}" for p in bb["trained_on"]["neg"]] + sims["neg"]
images = role_data(preset, D, seed, "styled-test")
proto = Protocol.from_preset(preset, column="black-box")
refs = [f"{W}/{r}" for r in bb["references"]]
out = f"{M}/clf/blackbox-dev-theft.pt"
c = preset["clf"]
argv = ["--dataset", "fmnist", "--access", "black-box", "--pos", *pos, "--neg", *neg, "--mlp_epoch", str(c["epochs"]),
        "--lr", str(c["lr"]), "--batch_size", str(c["batch"]), "--hidden-cap", str(c["hidden_cap"]),
        "--out", out, "--feature", preset["black_box_feature"], "--seed", str(seed), "--data-dir", D, "--model-dir", M]
if not os.path.exists(out):
    train_clf.main(train_clf.get_parser().parse_args(argv))
ver = Verifier(out, refs, images, "fmnist", dev, proto, seed=seed, data_dir=D)
rows = {}
for row in res["rows"]:
    model, ck = load_model(f"{W}/{row['suspect']}", device=dev)
    r = ver(model)
    rows.setdefault(row["mode"], []).append((r["p_value"], r["delta_mu"], float(r["p_suspect"].mean()), row["stylised_acc"]))
for name, p in [("control", ctrl)] + [(os.path.basename(s)[:-3], s) for s in sims["pos"] + sims["neg"]]:
    model, ck = load_model(p, device=dev)
    r = ver(model)
    rows.setdefault(name, []).append((r["p_value"], r["delta_mu"], float(r["p_suspect"].mean()), ck.get("metrics", {}).get("stylised_acc")))
un = []
for arch in ("wrn16-1", "wrn10-1"):
    for k in range(30):
        torch.manual_seed(seeds.derive(seed, "untrained", arch, k))
        r = ver(get_model(arch, 10, 1).eval())
        un.append((r["p_value"], r["delta_mu"]))
refm = ver.p_references.mean(1)
auc = load_checkpoint(out).get("model_level", {}).get("auc")
summary = dict(rows=rows, untrained_min_p=min(p for p, _ in un), untrained_flagged=sum(p < 0.01 for p, _ in un),
               untrained_max_dmu=max(d for _, d in un), ref_spread=float(refm.max() - refm.min()), ref_means=refm.tolist(), auc=auc,
               seconds=round(time.time() - t0))
print(f"== {path} {seed}: auc {auc} spread {refm.max()-refm.min():.3f} untrained flagged {summary['untrained_flagged']}/60 min p {summary['untrained_min_p']:.2g}")
for mode, lst in rows.items():
    print("   ", mode, " ".join(f"p={p:.2g} d={dm:.3f} mean={mu:.3f} sty={s}" for p, dm, mu, s in lst))
json.dump(summary, open(os.path.join(REPO, "experiments", f"bb_thefts-{path}-{seed}.json"), "w"), indent=1)
print("total", round(time.time() - t0), "s")
