"""Reproduce the paper's verification table from nothing: every stage, resumable.

    python reproduce.py                        # the embedded default: Fashion-MNIST on the CPU
    python reproduce.py --preset smoke         # a few hundred images, about 1.5 min (the tests use it)
    python reproduce.py --preset cifar10 --gpu 0

Stages: embed_features -> train_model (per architecture: victim-like and benign models behind the
meta-classifiers, weak benign models for the black-box ones, the held-out benign references; the
independent models) -> steal (the attacks; the defender's simulated thefts of the victim and of a benign
model, behind the black-box classifiers) -> gradientset -> train_clf -> verification of every suspect
(ownership.verify, the preset's protocol). Between embedding and verification every job (a model, an
attack, a gradient set, a classifier) starts as soon as the jobs whose outputs it reads are done, in
--workers processes, so the stages overlap. Artefacts go to the reference folders (data/, model/,
gradients_set/, prob/) under --workdir (default: the repository for real presets, results/smoke for
smoke), so the reference commands work on them afterwards. A stage is skipped when <out>/manifest.json
records it with the same arguments, preset, seed and input checksums, and its outputs still have the
recorded checksums (ownership/manifest.py). Writes <out>/results.json, results.md, results.png, probs.npz.
"""
import os
import time

import matplotlib
import numpy as np
import torch

import embed_features
import gradientset
import steal
import train_clf
import train_model
from ownership import cli, jsonio, paths
from ownership.checkpoints import atomic_write, load_checkpoint, load_model
from ownership.constants import (ACCESSES, ATTACK_MODES, BLACK_BOX, BLACK_BOX_FEATURES, COLUMNS, QUERY_MODES, REPO,
                                 SIMULATED_THEFTS, TESTS)
from ownership.data import role_data
from ownership.errors import UserError
from ownership.manifest import Stages
from ownership.presets import DATASETS, PAPER_WHITE_BOX
from ownership.training import amp_name
from ownership.verify import Protocol, Verifier, describe, record_columns

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)


def get_parser():
    p = cli.Parser(__doc__)
    cli.add_preset(p)
    p.add_argument("--out", default=None, help="results folder (default: results/<preset>)")
    p.add_argument("--workdir", default=None,
                   help="where data/, model/, gradients_set/, prob/ go (default: the repository; results/smoke "
                        "for the smoke preset)")
    p.add_argument("--gpu", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", default="ours", choices=["ours", "reference"],
                   help="ours: meta-classifiers on several victim-like and benign models, held-out benign "
                        "references, the preset's test; reference: the reference code's protocol (one victim "
                        "against one benign model, that same benign model as reference, Welch two-sided, "
                        "harmonic mean of 40 draws of 10 images), for comparison")
    p.add_argument("--test", default=None, choices=[t for t in TESTS if t != "reference"],
                   help="the test of protocol ours (default: the preset's; ownership/stats.py)")
    p.add_argument("--black-box", default=None, choices=BLACK_BOX,
                   help="the black-box column's meta-classifier: any-arch (one over every architecture, all references: "
                        "what a suspect behind an API gets) or per-arch (one per architecture and its references, "
                        "trained only when asked) (default: the preset's)")
    p.add_argument("--black-box-feature", default=None, choices=BLACK_BOX_FEATURES,
                   help="the black-box classifiers' features: prediction-shift (MOVE) or shift-true-label (plus the "
                        "probability each model gives the original's true label); one other than the preset's trains its own "
                        "classifiers, model/clf/blackbox-<dataset>[-<type>]-<feature>.pt (default: the preset's)")
    p.add_argument("--label-only", action="store_true",
                   help="black-box column from each model's top labels only (one-hot answers), as a label-only API "
                        "gives them; the references likewise")
    cli.add_amp(p)
    p.add_argument("--hard-negatives", action="store_true",
                   help="also train and verify the preset's harder negatives: independent models trained with "
                        "recipes the defender never used (the validity study)")
    p.add_argument("--workers", type=int, default=None,
                   help="jobs (models, attacks, gradient sets, classifiers) run at once, each in its own process "
                        "with cores/workers threads (default: 2 on a CPU with 2 or more cores, where small models "
                        "leave threads idle; 1 on CUDA)")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument("--deterministic", action="store_true", help="deterministic GPU kernels (slower)")
    p.add_argument("--debug", action="store_true")
    return p


def model_plan(preset, arch, model_dir, reference_protocol):
    """The models of one architecture, by purpose, as {purpose: [(path, train_model.py flags)]}:
    pos/neg behind the meta-classifiers (the first of each, then other seeds -s1, -s2 ...), weak (extra
    negatives of the black-box classifier: one epoch on the first n images, or for n = 0 no training at
    all, docs/VALIDITY.md) and refs
    (the held-out benign references). The reference protocol has one of each and tests against the
    benign model its classifier saw."""
    n_v, n_b = (1, 1) if reference_protocol else (preset["clf_models"]["victims"], preset["clf_models"]["benigns"])
    seeds = lambda n: [""] + [f"-s{k}" for k in range(1, n)]  # noqa: E731
    plan = dict(pos=[(paths.victim(model_dir, arch, t), ["--role", "victim", f"--tag={t}"]) for t in seeds(n_v)],
                neg=[(paths.benign(model_dir, arch, t), ["--role", "benign", f"--tag={t}"]) for t in seeds(n_b)],
                weak=[], refs=[])
    if reference_protocol:
        plan["refs"] = plan["neg"][:1]
        return plan
    for k, n in enumerate(preset["clf_models"]["weak"], 1):
        t = paths.weak_tag(k)
        budget = ["--images", str(n), "--epochs", "1"] if n else ["--epochs", "0"]  # 0: untrained, as initialised
        plan["weak"].append((paths.benign(model_dir, arch, t), ["--role", "benign", f"--tag={t}"] + budget))
    for k in range(1, preset["references"] + 1):
        t = paths.reference_tag(k)
        plan["refs"].append((paths.benign(model_dir, arch, t), ["--role", "benign", f"--tag={t}"]))
    return plan


# `python reproduce.py [--amp none]` (seed 0), wall clock in minutes, on 2-core AMD EPYC CPUs with the CPU to
# itself, per CPU kind (docs/BENCHMARKS.md, "`python reproduce.py` (seed 0)"; the start-up line quotes them):
# bf16 7 min 2 s at commit f124b5b (every stage but the style transfer, about 15 s, redone); fp32 7 min 45 s
# (fresh clone of 2d4c0b5, --amp none) and 11 min 43 s (fresh clone of f08880e, AVX2 only), both before the
# untrained negatives and the simulated thefts (about 1 min more a seed in evaluate.py)
MEASURED_MINUTES = {("fmnist", "bf16"): {"AVX512-BF16": 7.0},
                    ("fmnist", "fp32"): {"AVX512-BF16, --amp none": 7.8, "AVX2 only": 11.7}}


def float_path(device, amp):
    """(name, why): the float path of the training steps ('bf16' or 'fp32', training.amp_name) and why."""
    name = amp_name(device, amp)
    if amp != "auto":
        why = f"--amp {amp}"
    elif device.type == "cuda":
        why = "a CUDA device"
    else:
        why = ("this CPU has native bf16 (AVX512-BF16 or AMX); --amp none forces fp32" if name == "bf16" else
               "this CPU has no native bf16 (emulated bf16 is slower than fp32); --amp bf16 forces it")
    return name, why


def announce(args, device, workers, threads):
    """One line at the start: the float path and why, the worker processes, and the measured time of
    this preset and path where there is one."""
    name, why = float_path(device, args.amp)
    minutes = MEASURED_MINUTES.get((args.preset, name)) if device.type == "cpu" and args.scale == 1 else None
    when = ("; from nothing about " + " or ".join(f"{v:.0f} min ({cpu})" for cpu, v in minutes.items())
            + " on a 2-core CPU, less for finished stages" if minutes
            else "; no measured time for this preset and device (docs/BENCHMARKS.md)")
    print(f"reproduce.py: preset {args.preset}, seed {args.seed}; training in {name} ({why}); {workers} worker "
          f"process{'es' * (workers > 1)} of {threads} thread{'s' * (threads > 1)}{when}", flush=True)


def main(args):
    preset = cli.preset_of(args)
    ds = preset["dataset"]
    d = DATASETS[ds]
    va, aa = d["victim_arch"], d["attacker_arch"]
    archs = list(dict.fromkeys([va, aa]))
    for k, (arch, _) in enumerate(preset["independents"], 1):
        if arch not in archs:
            raise UserError(f"preset {args.preset!r}: independent model {k} is {arch}, but meta-classifiers exist "
                            f"only for {archs}; use one of those architectures")
    reference = args.protocol == "reference"
    simulated = () if reference else preset["clf_models"]["thefts"]
    if not set(simulated) <= set(SIMULATED_THEFTS) or ("multi-stage" in simulated and "distillation" not in simulated):
        raise UserError(f"preset {args.preset!r}: clf_models thefts {list(simulated)} must be distillation, or "
                        f"distillation and multi-stage (which fine-tunes the distillation student)")
    # one protocol per verdict column: the same test and m, each column's margin (presets: tau)
    protocols = {c: Protocol.from_preset(preset, "reference" if reference else args.test, column=c) for c in COLUMNS}
    workdir = args.workdir or (os.path.join(REPO, "results", "smoke") if args.preset == "smoke" else REPO)
    out = args.out or os.path.join(REPO, "results", args.preset + ("-reference" if reference else ""))
    dirs = {k: os.path.join(workdir, k) for k in ("data", "model", "gradients_set", "prob")}
    common = ["--seed", str(args.seed), "--gamma", str(preset["gamma"]), "--data-dir", dirs["data"],
              "--model-dir", dirs["model"], "--grad-dir", dirs["gradients_set"], "--prob-dir", dirs["prob"]]
    common += ["--gpu", str(args.gpu)] * (args.gpu is not None) + ["--deterministic"] * args.deterministic
    staged = common + ["--preset", args.preset, "--scale", str(args.scale)]
    trained = staged + ["--amp", args.amp, "--resume"]
    os.makedirs(out, exist_ok=True)
    st = Stages(os.path.join(out, "manifest.json"), preset, args.seed, args.force)
    # which black-box classifiers are trained and used, and the white-box features; the reference
    # protocol's are per architecture, and the paper's weight signs with the training transform [R]
    black_box = "per-arch" if reference else args.black_box or preset["black_box"]
    white_box = PAPER_WHITE_BOX if reference else preset["white_box"]
    black_box_feature = "prediction-shift" if reference else args.black_box_feature or preset["black_box_feature"]
    device = cli.get_device(args.gpu)
    cores = torch.get_num_threads()
    workers = args.workers or (1 if device.type == "cuda" else min(2, cores))
    pool = dict(workers=workers, threads=max(1, cores // workers))
    announce(args, device, **pool)
    M = dirs["model"]
    t0 = time.time()

    # 1. the external feature
    styled = paths.styled_dir(dirs["data"], ds, preset["gamma"])
    st.run("embed", styled, embed_features, staged + ["--preview"])

    # 2.-5. the models, attacks, gradient sets and meta-classifiers: one list of jobs, each waiting for
    #    the jobs whose outputs it reads, run in `workers` processes at once (Stages.run_all), so that the
    #    stages overlap and no process waits for the end of a stage
    plans = {arch: model_plan(preset, arch, M, reference) for arch in archs}
    models = {path: trained + ["--arch", arch] + flags for arch in archs for path, flags in sum(plans[arch].values(), [])}
    independents = []
    for k, (arch, _) in enumerate(preset["independents"], 1):
        path = paths.independent(M, k, arch)
        models[path] = trained + ["--role", "independent", "--arch", arch, "--index", str(k)]
        independents.append(("independent", path, arch))
    for k, (arch, recipe) in enumerate(preset.get("hard_negatives", []) if args.hard_negatives else [],
                                       len(preset["independents"]) + 1):
        path = paths.independent(M, k, arch)
        flags = [f"--{key.replace('_', '-')}={value}" for key, value in recipe.items()]
        models[path] = trained + ["--role", "independent", "--arch", arch, "--index", str(k)] + flags
        independents.append(("independent", path, arch))
    files = {arch: {purpose: [path for path, _ in entries] for purpose, entries in plan.items()}
             for arch, plan in plans.items()}
    victim = files[va]["pos"][0]
    # the longest first, so that no worker is left alone with a long job at the end: the victim's
    # architecture, then the attackers', the weak and untrained models (a few hundred images, or none) last
    weak = {path for arch in archs for path in files[arch]["weak"]}
    cost = lambda path, argv: (path in weak, argv[argv.index("--arch") + 1] != va)  # noqa: E731
    train = [("train", path, train_model, argv, [styled]) for path, argv in sorted(models.items(), key=lambda j: cost(*j))]
    assert train[0][1] == victim  # model_plan lists it first

    # the attacks (multi-stage fine-tunes the distillation student, and lists it among its inputs)
    suspects = [("source", victim, va)] + [(mode, paths.attack(M, mode, paths.arch_for_mode(ds, mode)),
                                            paths.arch_for_mode(ds, mode)) for mode in ATTACK_MODES]
    attacker = dict((m, p) for m, p, _ in suspects[1:])
    steals = {m: ("steal", p, steal, trained + ["--mode", m], [victim, styled] + [attacker["distillation"]] * (
        m == "multi-stage")) for m, p in attacker.items()}
    # the query thieves that ask with the preset's other kinds of data (query_data[1:]): rows of their own
    for mode in QUERY_MODES:
        for kind in preset["query_data"][1:]:
            arch = paths.arch_for_mode(ds, mode)
            path = paths.attack(M, mode, arch, kind)
            steals[f"{mode} ({kind})"] = ("steal", path, steal, trained + ["--mode", mode, "--query-data", kind],
                                          [victim, styled])
            suspects.append((f"{mode} ({kind})", path, arch))
    suspects += independents

    # the defender's simulated thefts (clf_models["thefts"]): for each architecture, students of the victim
    # (positives of the black-box classifiers) and of the first benign model of the victim's architecture
    # (negatives), distilled on the victim's own data and, for multi-stage, fine-tuned on its clean part;
    # seeds of their own (paths.THEFT_TAG), so that no simulated theft repeats an attack (docs/VALIDITY.md)
    theft_jobs = []
    for arch in archs:
        files[arch].update({"theft-pos": [], "theft-neg": []})
        for label, teacher in (("theft-pos", victim), ("theft-neg", files[va]["neg"][0])):
            for mode in simulated:
                path = paths.theft(M, teacher, mode, arch)
                argv = trained + ["--mode", mode, "--victim", teacher, "--arch", arch, "--tag", paths.THEFT_TAG,
                                  "--out", path]
                inputs = [teacher, styled]
                if mode == "multi-stage":
                    first = paths.theft(M, teacher, "distillation", arch)
                    argv += ["--student", first, "--fine-tune-data", "victim-clean"]
                    inputs.append(first)
                theft_jobs.append(("steal", path, steal, argv, inputs))
                files[arch][label].append(path)

    # gradient sets and meta-classifiers: white-box per architecture, and one black-box classifier over
    # every architecture (a suspect behind an API has no known architecture; docs/API.md), plus one
    # black-box classifier per architecture with --black-box per-arch
    c = preset["clf"]
    suffix = "-refprotocol.pt" if reference else ".pt"
    bb_suffix = suffix if reference or black_box_feature == preset["black_box_feature"] else f"-{black_box_feature}.pt"
    gradient_jobs, clf_jobs = [], []

    def classifier(path, access, pos, negs, inputs, arch=None):
        clf_jobs.append(("clf", path, train_clf, common + [
            "--dataset", ds, "--access", access, "--pos", *pos, "--neg", *negs, "--mlp_epoch", str(c["epochs"]),
            "--lr", str(c["lr"]), "--batch_size", str(c["batch"]), "--hidden-cap", str(c["hidden_cap"]), "--out",
            path] + ["--type", arch] * (arch is not None)
            + ["--feature", white_box["feature"] if access == "white-box" else black_box_feature],
            pos + negs + [styled] + inputs))
        return path

    clfs = {}
    refs = {(arch, access): files[arch]["refs"] for arch in archs for access in ACCESSES}
    every = lambda purpose: [f for arch in archs for f in files[arch][purpose]]  # noqa: E731
    any_arch = classifier(paths.clf(M, ds, None, "black-box").replace(".pt", bb_suffix), "black-box",
                          every("pos") + every("theft-pos"), every("neg") + every("weak") + every("theft-neg"),
                          [])  # the longest classifier first
    for arch in archs:
        pos, neg, weak = files[arch]["pos"], files[arch]["neg"], files[arch]["weak"]
        grads = [paths.gradient_set(dirs["gradients_set"], m, styled, feature=white_box["feature"]) for m in pos + neg]
        flags = ["--feature", white_box["feature"]] + ["--no-augment"] * (not white_box["augment"])
        gradient_jobs += [("gradients", g, gradientset, common + ["--dataset", ds, "--m", m] + flags, [m, styled])
                          for m, g in zip(pos + neg, grads)]
        clfs[arch, "white-box"] = classifier(paths.clf(M, ds, arch).replace(".pt", suffix), "white-box", pos, neg,
                                             grads, arch)
        if black_box == "per-arch":
            clfs[arch, "black-box"] = classifier(paths.clf(M, ds, arch, "black-box").replace(".pt", bb_suffix),
                                                 "black-box", pos + files[arch]["theft-pos"],
                                                 neg + weak + files[arch]["theft-neg"], [], arch)
    # the victim, then the attacks that need only it and take longest (zero-shot; distillation, which
    # multi-stage waits for), the other models, the other attacks, gradient sets, classifiers
    early = [steals.pop("zero-shot"), steals.pop("distillation")]
    st.run_all(train[:1] + early + train[1:] + list(steals.values()) + theft_jobs + gradient_jobs + clf_jobs, **pool)
    if black_box == "any-arch":  # the table's black-box column: the classifier and references an API suspect gets
        for arch in archs:
            clfs[arch, "black-box"], refs[arch, "black-box"] = any_arch, paths.all_references(M, archs)

    # 6. verification of every suspect against the held-out references of its architecture
    start = time.time()
    images = role_data(preset, dirs["data"], args.seed, "styled-test", preset["gamma"])
    by_path = {}  # one Verifier per classifier: the any-architecture one serves every architecture
    for (arch, access), path in clfs.items():
        if path not in by_path:
            by_path[path] = Verifier(path, refs[arch, access], images, ds, device, protocols[access], seed=args.seed,
                                     data_dir=dirs["data"], label_only=args.label_only and access == "black-box")
    verifiers = {key: by_path[path] for key, path in clfs.items()}
    for arch in archs:  # the baseline: no meta-classifier, correctness on stylised images (docs/VALIDITY.md)
        verifiers[arch, "baseline"] = Verifier(None, files[arch]["refs"], images, ds, device, protocols["baseline"],
                                               seed=args.seed, data_dir=dirs["data"])
    rel = lambda p: os.path.relpath(p, workdir)  # noqa: E731
    rows, probs = [], {column: dict(suspect=[], references=[]) for column in COLUMNS}
    for mode, path, arch in suspects:
        model, ck = load_model(path, device=device)
        met = ck.get("metrics", {})
        row = dict(mode=mode, suspect=rel(path), arch=arch, clean_acc=met.get("clean_acc"),
                   stylised_acc=met.get("stylised_acc"))
        for access in COLUMNS:
            r = verifiers[arch, access](model)
            row[access] = {k: r[k] for k in ("p_value", "delta_mu", "verdict")}
            probs[access]["suspect"].append(r["p_suspect"])
            probs[access]["references"].append(r["p_references"])
        rows.append(row)
    st.timings["verify"] = round(time.time() - start, 1)
    st.timings["total"] = round(time.time() - t0, 1)
    classifiers = {}
    for (arch, access), path in clfs.items():
        ck = load_checkpoint(path)
        classifiers.setdefault(arch, {})[access] = dict(
            path=rel(path), held_out_acc=ck.get("test_acc"), model_level=ck.get("model_level"),
            references=[rel(r) for r in refs[arch, access]],
            trained_on={k: [rel(m) for m in v] for k, v in ck.get("sources", {}).items()})
    protocol = dict(name=args.protocol, **record_columns(protocols))
    result = dict(preset=args.preset, seed=args.seed, scale=args.scale, protocol=protocol, black_box=black_box,
                  black_box_feature=black_box_feature, white_box=white_box, label_only=args.label_only, rows=rows, classifiers=classifiers,
                  timings=st.timings)
    write_results(out, result, probs)
    print(table(result))
    print(f"wrote {out}/results.json, results.md, results.png, probs.npz")
    return result


def table(result):
    """The results as a markdown table, one row per suspect, both accesses."""
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    head = "| mode | suspect | arch | clean acc | stylised acc |" + " p | Δμ | verdict |".join(
        f" {a}" for a in COLUMNS) + " p | Δμ | verdict |"
    lines = [head, "|---" * (5 + 3 * len(COLUMNS)) + "|"]
    for r in result["rows"]:
        cells = [r["mode"], r["suspect"], r["arch"], fmt(r["clean_acc"]), fmt(r["stylised_acc"])]
        for a in COLUMNS:
            cells += [f"{r[a]['p_value']:.2e}", f"{r[a]['delta_mu']:.3f}", r[a]["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_probs(out):
    """probs.npz of a results folder: {access: (suspect (rows, N), references (rows, K, N))}, rows in
    the order of results.json's rows."""
    f = np.load(os.path.join(out, "probs.npz"))
    return {a: (f[f"{a}/suspect"], f[f"{a}/references"]) for a in COLUMNS}


def write_results(out, result, probs):
    jsonio.write(os.path.join(out, "results.json"), result)
    atomic_write(os.path.join(out, "probs.npz"), lambda tmp: np.savez(
        tmp, **{f"{a}/{k}": np.stack(v) for a, parts in probs.items() for k, v in parts.items()}))
    proto = result["protocol"]
    md = (f"# Verification on preset `{result['preset']}` (seed {result['seed']}, protocol {proto['name']})\n\n"
          f"Test: {proto['description']}, m = {describe(proto['m'])}, tau = {describe(proto['tau'])}, alpha = {proto['alpha']}.\n\n"
          + table(result) + "\n\nMeta-classifiers: "
          + "; ".join(f"{arch}/{a}: held-out image acc {c['held_out_acc']:.3f}, model-level AUC "
                      f"{c['model_level']['auc'] if c['model_level'] else None}, references {', '.join(c['references'])}"
                      for arch, by_access in result["classifiers"].items() for a, c in by_access.items())
          + "\n\nStage timings (s): " + ", ".join(f"{k} {v}" for k, v in result["timings"].items()) + "\n")
    atomic_write(os.path.join(out, "results.md"), lambda tmp: open(tmp, "w").write(md))
    plot(result, probs, os.path.join(out, "results.png"))


def plot(result, probs, path):
    """Box plots of P(stolen): each suspect (red), then each architecture's references (grey)."""
    fig, axes = plt.subplots(len(COLUMNS), 1, figsize=(0.9 * len(result["rows"]) + 3, 9), sharex=True)
    for ax, access in zip(axes, COLUMNS):
        data = list(probs[access]["suspect"])
        labels = [r["mode"] for r in result["rows"]]
        refs = {r["arch"]: p for r, p in zip(result["rows"], probs[access]["references"])}
        for arch, p_b in refs.items():  # each architecture's references once
            data += list(p_b)
            labels += [f"ref{j + 1} {arch}" for j in range(len(p_b))]
        parts = ax.boxplot(data, patch_artist=True)
        for k, box in enumerate(parts["boxes"]):
            box.set_facecolor("tab:red" if k < len(result["rows"]) else "tab:gray")
        ax.set_ylabel("correct on stylised" if access == "baseline" else f"P(stolen), {access}")
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, fontsize=7)
    axes[0].set_title(f"{result['preset']}: each suspect (red), then the held-out benign references (grey)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    cli.run(main, get_parser())
