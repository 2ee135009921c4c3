"""Reproduce the paper's verification table from nothing: every stage, in order, resumable.

    python reproduce.py                        # the embedded default: Fashion-MNIST on the CPU
    python reproduce.py --preset smoke         # a few hundred images, about a minute (the tests use it)
    python reproduce.py --preset cifar10 --gpu 0

Stages: embed_features -> train_model (victims, benign models, weak benign models -weak1, -weak2 for
the black-box classifiers, the held-out benign references -ref, -ref2 ..., for the victim's and the
attackers' architecture; independent models) -> steal (the attacks) -> gradientset -> train_clf ->
verification of every suspect (the preset's test, m and tau). Artefacts go to the reference folders (data/, model/, gradients_set/,
prob/) under --workdir (default: the repository for real presets, results/smoke for smoke), so the
reference commands work on them afterwards. A stage is skipped when <out>/manifest.json records it
with the same arguments, preset, seed and input checksums, and its outputs exist with the recorded
checksums (see Stages). Writes <out>/results.json, results.md and results.png.
"""
import hashlib
import json
import os
import shutil
import time

import numpy as np

import embed_features
import gradientset
import steal
import train_clf
import train_model
from ownership import blackbox, cli, paths, verify
from ownership.checkpoints import atomic_write, load_checkpoint, load_model
from ownership.data import role_data
from ownership.presets import DATASETS, PRESETS, get_preset

ACCESSES = ["white-box", "black-box"]
ROW_MODES = ["source", "distillation", "zero-shot", "fine-tune", "label-query", "logit-query", "multi-stage"]


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--preset", default="fmnist", choices=list(PRESETS))
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every budget and, below 1, the data (get_preset in ownership/presets.py)")
    p.add_argument("--out", default=None, help="results folder (default: results/<preset>)")
    p.add_argument("--workdir", default=None,
                   help="where data/, model/, gradients_set/, prob/ go (default: the repository; results/smoke "
                        "for the smoke preset)")
    p.add_argument("--gpu", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", default="ours", choices=["ours", "reference"],
                   help="ours: meta-classifier on several victim-like and benign models, held-out benign "
                        "reference, the paper's one-sided paired test; reference: the reference code's protocol "
                        "(one victim against one benign model, that same benign model as reference, Welch "
                        "two-sided, harmonic mean of 40 draws), for comparison")
    p.add_argument("--test", default=None, choices=[t for t in verify.TESTS if t != "reference"],
                   help="the test of protocol ours (default: the preset's; see ownership/stats.py)")
    cli.add_amp(p)
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument("--deterministic", action="store_true", help="deterministic GPU kernels (slower)")
    p.add_argument("--debug", action="store_true")
    return p


def checksum(path):
    """sha256 of a file, or of a folder: every file's relative name and sha256, in sorted order
    (hidden temporary files skipped). Reading is the cost: about 1 GB/s here (docs/BENCHMARKS.md)."""
    h = hashlib.sha256()
    if not os.path.isdir(path):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            file = os.path.join(root, name)
            h.update(f"{os.path.relpath(file, path)}\0{checksum(file)}\n".encode())
    return h.hexdigest()


class Stages:
    """Runs stage functions and records each finished one in manifest.json, keyed by its first output:
    the module, argv, preset hash and seed, the checksums of its input files and of its outputs. A stage
    is skipped when that record matches and its outputs exist with the recorded checksums; an output
    changed since (corrupted, replaced) is removed and its stage rerun. Since the inputs' checksums are
    part of the record, every later stage that consumes a changed output reruns too. A rerun that gives
    the same bytes changes nothing downstream: on the CPU a gradient set does; a checkpoint does not, as
    it records its training time, so the stages after a retrained model rerun."""

    def __init__(self, manifest_path, preset, seed, force):
        self.path = manifest_path
        self.preset_hash = hashlib.sha256(json.dumps(preset, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.seed = seed
        self.force = force
        self.done = {}
        if os.path.exists(manifest_path) and not force:
            with open(manifest_path) as f:
                self.done = json.load(f)
        self.sums = {}  # path -> checksum, each file read once per run
        self.timings = {}

    def checksum(self, path):
        if path not in self.sums:
            self.sums[path] = checksum(path) if os.path.exists(path) else None
        return self.sums[path]

    def run(self, stage, outputs, module, argv, inputs=()):
        outputs = [outputs] if isinstance(outputs, str) else outputs
        record = dict(stage=stage, module=module.__name__, argv=argv, preset=self.preset_hash, seed=self.seed,
                      inputs={p: self.checksum(p) for p in inputs})
        old = self.done.get(outputs[0])
        old = old if isinstance(old, dict) else {}  # a manifest of an older version: redo
        made = old.get("outputs", {})
        if (not self.force and {k: old.get(k) for k in record} == record
                and all(self.checksum(o) is not None and self.checksum(o) == made.get(o) for o in outputs)):
            return False
        for o in outputs:  # changed since its stage made it: never let the stage take it as done
            if o in made and self.checksum(o) not in (None, made[o]):
                print(f"{o} changed since {stage} made it (checksum differs); redoing {stage}")
                if os.path.isdir(o):
                    shutil.rmtree(o)
                else:
                    os.remove(o)
        start = time.time()
        module.main(module.get_parser().parse_args(argv))
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.time() - start, 1)
        for o in outputs:
            self.sums.pop(o, None)
        self.done[outputs[0]] = dict(record, outputs={o: self.checksum(o) for o in outputs})
        atomic_write(self.path, lambda tmp: open(tmp, "w").write(json.dumps(self.done, indent=1)))
        return True


def main(args):
    preset = get_preset(args.preset, args.scale)
    ds = preset["dataset"]
    d = DATASETS[ds]
    va, aa = d["victim_arch"], d["attacker_arch"]
    archs = list(dict.fromkeys([va, aa]))
    for k, (arch, _) in enumerate(preset["independents"], 1):
        if arch not in archs:
            raise cli.UserError(f"preset {args.preset!r}: independent model {k} is {arch}, but meta-classifiers exist "
                                f"only for {archs}; use one of those architectures")
    workdir = args.workdir or (os.path.join(cli.REPO, "results", "smoke") if args.preset == "smoke" else cli.REPO)
    out = args.out or os.path.join(cli.REPO, "results", args.preset + ("-reference" if args.protocol == "reference" else ""))
    dirs = dict(data=os.path.join(workdir, "data"), model=os.path.join(workdir, "model"),
                grad=os.path.join(workdir, "gradients_set"), prob=os.path.join(workdir, "prob"))
    common = ["--seed", str(args.seed), "--gamma", str(preset["gamma"]), "--data-dir", dirs["data"],
              "--model-dir", dirs["model"], "--grad-dir", dirs["grad"], "--prob-dir", dirs["prob"]]
    if args.gpu is not None:
        common += ["--gpu", str(args.gpu)]
    if args.deterministic:
        common += ["--deterministic"]
    staged = common + ["--preset", args.preset, "--scale", str(args.scale), "--amp", args.amp, "--resume"]
    os.makedirs(out, exist_ok=True)
    st = Stages(os.path.join(out, "manifest.json"), preset, args.seed, args.force)
    device = cli.get_device(args.gpu)
    M = dirs["model"]
    t0 = time.time()

    # 1. the external feature
    styled = paths.styled_dir(dirs["data"], ds, preset["gamma"])
    st.run("embed", styled, embed_features, common + ["--preset", args.preset, "--scale", str(args.scale), "--preview"])

    # 2. per architecture: victim-like and benign models for the meta-classifier (the victim and
    #    benign-<arch> first, then other seeds: -s1, -s2 ...), weak benign models for the black-box
    #    classifier (-weak1, -weak2), and the held-out benign references
    n_v, n_b = preset["clf_models"]["victims"], preset["clf_models"]["benigns"]
    if args.protocol == "reference":
        n_v = n_b = 1
    tags = lambda n: [""] + [f"-s{k}" for k in range(1, n)]  # noqa: E731
    pos, neg, weak, refs = {}, {}, {}, {}
    for arch in archs:
        pos[arch] = [paths.victim(M, arch, t) for t in tags(n_v)]
        neg[arch] = [paths.benign(M, arch, t) for t in tags(n_b)]
        for role, files in (("victim", pos[arch]), ("benign", neg[arch])):
            for t, f in zip(tags(len(files)), files):
                st.run("train", f, train_model, staged + ["--role", role, "--arch", arch, f"--tag={t}"], [styled])
        # weak benign models, one epoch on the first n images: extra negatives of the black-box
        # classifier, so that weakness is not read as victim-like (docs/VALIDITY.md, "Weak models")
        weak[arch] = []
        for k, n in enumerate([] if args.protocol == "reference" else preset["clf_models"].get("weak", []), 1):
            weak[arch].append(paths.benign(M, arch, paths.weak_tag(k)))
            st.run("train", weak[arch][-1], train_model, staged + ["--role", "benign", "--arch", arch,
                   f"--tag={paths.weak_tag(k)}", "--images", str(n), "--epochs", "1"], [styled])
        # the reference protocol uses the benign model the classifier saw; ours K held-out ones
        if args.protocol == "reference":
            refs[arch] = [neg[arch][0]]
            continue
        refs[arch] = []
        for t in map(paths.reference_tag, range(1, preset.get("references", 1) + 1)):
            refs[arch].append(paths.benign(M, arch, t))
            st.run("train", refs[arch][-1], train_model, staged + ["--role", "benign", "--arch", arch, f"--tag={t}"],
                   [styled])
    independents = []
    for k, (arch, _) in enumerate(preset["independents"], 1):
        path = paths.independent(M, k, arch)
        st.run("train", path, train_model, staged + ["--role", "independent", "--arch", arch, "--index", str(k)],
               [styled])
        independents.append(("independent", path, arch))

    # 3. the attacks
    suspects = [("source", pos[va][0], va)]
    for mode in ROW_MODES[1:]:
        arch = va if mode == "fine-tune" else aa
        path = paths.attack(M, mode, arch)
        st.run("steal", path, steal, staged + ["--mode", mode], [pos[va][0], styled])
        suspects.append((mode, path, arch))
    suspects += independents

    # 4. gradient sets and 5. meta-classifiers, per architecture and access
    clfs = {}
    c = preset["clf"]
    suffix = "-refprotocol" if args.protocol == "reference" else ""
    for arch in archs:
        models = pos[arch] + neg[arch]
        grads = [paths.gradient_set(dirs["grad"], m, styled) for m in models]
        for m, g in zip(models, grads):
            st.run("gradients", g, gradientset, common + ["--dataset", ds, "--m", m], [m, styled])
        for access in ACCESSES:
            path = paths.clf(M, ds, arch, access).replace(".pt", suffix + ".pt")
            negs = neg[arch] + (weak[arch] if access == "black-box" else [])
            st.run("clf", path, train_clf,
                   common + ["--dataset", ds, "--type", arch, "--access", access, "--pos", *pos[arch], "--neg",
                             *negs, "--mlp_epoch", str(c["epochs"]), "--lr", str(c["lr"]), "--batch_size",
                             str(c["batch"]), "--hidden-cap", str(c["hidden_cap"]), "--out", path],
                   pos[arch] + negs + [styled] + (grads if access == "white-box" else []))
            clfs[(arch, access)] = path

    # 6. verification of every suspect against the benign reference of its architecture
    start = time.time()
    images = role_data(preset, dirs["data"], args.seed, "styled-test", preset["gamma"])
    clean_x = blackbox.originals(images, ds, dirs["data"], "test")
    test_name = "reference" if args.protocol == "reference" else (args.test or preset.get("test", "paper"))
    ref_probs, rows, probs_out = {}, [], {}
    for i, (mode, path, arch) in enumerate(suspects):
        model, ck = load_model(path, device=device)
        met = ck.get("metrics", {})
        row = dict(mode=mode, suspect=os.path.relpath(path, workdir), arch=arch, clean_acc=met.get("clean_acc"),
                   stylised_acc=met.get("stylised_acc"))
        for access in ACCESSES:
            clf = load_checkpoint(clfs[(arch, access)], "meta-classifier")
            if (arch, access) not in ref_probs:
                ref_probs[(arch, access)] = [verify.probabilities(load_model(r, device=device)[0], clf, images, ds,
                                                                  device, seed=args.seed, clean_x=clean_x)
                                             for r in refs[arch]]
            p_s = verify.probabilities(model, clf, images, ds, device, seed=args.seed, clean_x=clean_x)
            p_b = ref_probs[(arch, access)]
            r = verify.test(p_s, p_b, preset["m"], preset["tau"], test_name, args.seed)
            key = "" if access == "white-box" else "bb_"
            row.update({key + "p_value": r["p_value"], key + "delta_mu": r["delta_mu"], key + "verdict": r["verdict"]})
            probs_out[f"{i}:{mode}:{access}"] = (p_s, p_b)
        rows.append(row)
    st.timings["verify"] = round(time.time() - start, 1)
    st.timings["total"] = round(time.time() - t0, 1)
    clf_info = {f"{arch}/{access}": dict(path=os.path.relpath(clfs[(arch, access)], workdir),
                                         trained_on=load_checkpoint(clfs[(arch, access)]).get("sources"),
                                         held_out_acc=load_checkpoint(clfs[(arch, access)]).get("test_acc"),
                                         references=[os.path.relpath(r, workdir) for r in refs[arch]])
                for arch in archs for access in ACCESSES}
    result = dict(preset=args.preset, seed=args.seed, scale=args.scale, protocol=args.protocol,
                  test=verify.TESTS[test_name], test_name=test_name, m=preset["m"], tau=preset["tau"], alpha=verify.ALPHA, rows=rows,
                  classifiers=clf_info, timings=st.timings)
    write_results(out, result, probs_out)
    print(table(result))
    print(f"wrote {out}/results.json, results.md, results.png, probs.npz")
    return result


def table(result):
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| mode | suspect | arch | clean acc | stylised acc | white-box p | Δμ | verdict | black-box p | Δμ | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['mode']} | {r['suspect']} | {r['arch']} | {fmt(r['clean_acc'])} | {fmt(r['stylised_acc'])} | "
                     f"{r['p_value']:.2e} | {r['delta_mu']:.3f} | {r['verdict']} | "
                     f"{r['bb_p_value']:.2e} | {r['bb_delta_mu']:.3f} | {r['bb_verdict']} |")
    return "\n".join(lines)


def write_results(out, result, probs):
    atomic_write(os.path.join(out, "results.json"), lambda tmp: open(tmp, "w").write(json.dumps(result, indent=1)))
    atomic_write(os.path.join(out, "probs.npz"), lambda tmp: np.savez(
        tmp, **{f"{k}:suspect": v[0] for k, v in probs.items()},
        **{f"{k}:references": np.stack(v[1]) for k, v in probs.items()}))
    md = (f"# Verification on preset `{result['preset']}` (seed {result['seed']}, protocol {result['protocol']})\n\n"
          f"Test: {result['test']}, m = {result['m']}, tau = {result['tau']}, alpha = {result['alpha']}.\n\n"
          + table(result) + "\n\nMeta-classifiers: "
          + "; ".join(f"{k}: held-out acc {v['held_out_acc']:.3f}, references {', '.join(v['references'])}"
                      for k, v in result["classifiers"].items())
          + "\n\nStage timings (s): " + ", ".join(f"{k} {v}" for k, v in result["timings"].items()) + "\n")
    atomic_write(os.path.join(out, "results.md"), lambda tmp: open(tmp, "w").write(md))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 1, figsize=(0.9 * len(result["rows"]) + 3, 6.5), sharex=True)
    for ax, access in zip(axes, ACCESSES):
        data, labels = [], []
        colours, ref_sets = [], {}
        for k, (p_s, p_b) in probs.items():
            if k.endswith(access):
                i = int(k.split(":")[0])
                data.append(p_s)
                labels.append(k.split(":")[1])
                colours.append("tab:red")
                ref_sets[result["rows"][i]["arch"]] = p_b
        for arch, p_b in ref_sets.items():  # each architecture's references once
            data += list(p_b)
            labels += [f"ref{j + 1} {arch}" for j in range(len(p_b))]
            colours += ["tab:gray"] * len(p_b)
        parts = ax.boxplot(data, patch_artist=True)
        for box, colour in zip(parts["boxes"], colours):
            box.set_facecolor(colour)
        ax.set_ylabel(f"P(stolen), {access}")
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, fontsize=7)
    axes[0].set_title(f"{result['preset']}: each suspect (red), then the held-out benign references (grey)")
    fig.tight_layout()
    atomic_write(os.path.join(out, "results.png"), lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    cli.run(main, get_parser())
