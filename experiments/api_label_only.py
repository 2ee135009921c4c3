"""How much detection a label-only API keeps (issue 16, docs/API.md): every suspect of a finished
reproduce run, verified through the API path's arithmetic (blackbox.queries -> the model's softmax, or
the one-hot vector of its top label -> features_from_probs -> the per-dataset classifier
blackbox-<dataset>.pt) against all held-out references of every architecture (label-only for
label-only), with the preset's test, m and tau. Uses a finished reproduce run (its --workdir as argv[1],
its preset and seed as argv[2], argv[3]) and its per-dataset black-box classifier
(python train_clf.py --access black-box --model-dir <workdir>/model --data-dir <workdir>/data).

    python experiments/api_label_only.py results/smoke smoke 0

Prints per suspect the p-value of one verification (the preset's m images, seed draw), the detection
rate over disjoint draws of m images, and the mean P(stolen), with full probabilities and labels only.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np

from ownership import blackbox, metaclf, paths, verify
from ownership.checkpoints import load_checkpoint, load_model
from ownership.data import load_styled
from ownership.presets import DATASETS, get_preset

work, preset_name, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
preset = get_preset(preset_name)
ds = preset["dataset"]
M, D = os.path.join(work, "model"), os.path.join(work, "data")
clf = load_checkpoint(paths.clf(M, ds, None, "black-box"))
images = load_styled(D, ds, preset["gamma"], "test")
q = blackbox.queries(images, blackbox.originals(images, ds, D, "test"), ds, clf["views"], seed)


def p_stolen(path, label_only):
    pr = blackbox.model_probs(load_model(path)[0], q, ds, "cpu")
    if label_only:
        pr = blackbox.one_hot(pr.argmax(1), pr.shape[1])
    return metaclf.predict_proba(clf, blackbox.features_from_probs(pr, clf["views"]))


va, aa = DATASETS[ds]["victim_arch"], DATASETS[ds]["attacker_arch"]
suspects = [("source", paths.victim(M, va))]
for mode in ["distillation", "zero-shot", "fine-tune", "label-query", "logit-query", "multi-stage"]:
    suspects.append((mode, paths.attack(M, mode, va if mode == "fine-tune" else aa)))
suspects += [("independent", paths.independent(M, k, a)) for k, (a, _) in enumerate(preset["independents"], 1)]
refs = paths.all_references(M)
m, tau = preset["m"], preset["tau"]
print(f"{preset_name} seed {seed}: {len(images)} images x {clf['views'] + 1} queries, {len(refs)} references, "
      f"test paired-all, m={m}, tau={tau}")
print("| suspect | full p | full rate | full mean P | label p | label rate | label mean P |")
print("|---|---|---|---|---|---|---|")
ref_p = {lo: [p_stolen(r, lo) for r in refs] for lo in (False, True)}
for mode, path in suspects:
    if not os.path.exists(path):
        continue
    cells = []
    for lo in (False, True):
        p_s = p_stolen(path, lo)
        r = verify.test(p_s, ref_p[lo], m, tau, "paired-all", seed)
        rate = verify.detection_rate(p_s, ref_p[lo], m, "paired-all", tau)
        cells += [f"{r['p_value']:.2e}", f"{rate:.2f}", f"{np.mean(p_s):.3f}"]
    print(f"| {mode} ({os.path.basename(path)}) | " + " | ".join(cells) + " |")
print("references mean P(stolen): full " + ", ".join(f"{np.mean(p):.3f}" for p in ref_p[False])
      + "; labels " + ", ".join(f"{np.mean(p):.3f}" for p in ref_p[True]))
