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
recorded checksums (ownership/manifest.py). Writes <out>/results.json, results.md, results.png (-log10 p per suspect and column), results-probs.png
(per-image P(stolen)), probs.npz.
"""
import json
import os
import time

import matplotlib
import numpy as np
import torch

from ownership import cli, jsonio
from ownership.answers import reducer
from ownership.checkpoints import atomic_write, load_checkpoint, load_model
from ownership.constants import BLACK_BOX, BLACK_BOX_FEATURES, COLUMNS, DI_COLUMNS, METHODS, TESTS
from ownership.data import role_data
from ownership.dataset_inference import combined_verdict
from ownership.errors import UserError
from ownership.manifest import Stages, Task
from ownership.plan import Plan
from ownership.presets import DATASETS
from ownership.training import amp_name
from ownership.verify import Protocol, describe, record_columns, verifiers

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
                        "gives them, the references likewise, with black-box classifiers trained on top labels "
                        "(model/clf/blackbox-<dataset>-labels.pt, train_clf.py --label-only)")
    p.add_argument("--decimals", type=int, default=None,
                   help="black-box column from answers rounded to this many decimals and renormalised, as many APIs "
                        "give them (serve.py --decimals); the references likewise")
    p.add_argument("--top-k", type=int, default=None,
                   help="black-box column from the K most probable classes of each answer only (serve.py --top-k); "
                        "the references likewise")
    p.add_argument("--method", default=None, choices=METHODS,
                   help="move: MOVE's columns (white-box, black-box, baseline); both: also Dataset Inference's Blind "
                        "Walk on every suspect (column di, labels only) and the combined verdict (MOVE black-box or "
                        "DI at alpha/2 each); minutes per suspect (docs/DATASET_INFERENCE.md). DI alone on "
                        "checkpoints: dataset_inference.py (default: the preset's, move)")
    cli.add_amp(p)
    p.add_argument("--hard-negatives", action="store_true",
                   help="also train and verify the preset's harder negatives: independent models trained with "
                        "recipes the defender never used (the validity study)")
    p.add_argument("--workers", type=int, default=None,
                   help="jobs (models, attacks, gradient sets, classifiers) run at once, each in its own process "
                        "with cores/workers threads (default: 2 on a CPU with 2 or more cores, where small models "
                        "leave threads idle; 1 on CUDA)")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument("--plan", action="store_true",
                   help="print every job (its output and inputs) and whether it is done or pending, and why; run nothing")
    p.add_argument("--deterministic", action="store_true", help="deterministic GPU kernels (slower)")
    p.add_argument("--debug", action="store_true")
    return p


# `python reproduce.py [--preset P] [--amp none]` from nothing, wall clock, on 2-core AMD EPYC CPUs with the
# CPU to itself, per CPU kind: bf16 a fresh checkout of commit c99e8bf (AVX512-BF16, 2026-12-06); fp32 fresh
# clones of 2d4c0b5 (AVX512-BF16, --amp none) and f08880e (AVX2 only), which predate the simulated thefts, the
# 160-iteration zero-shot thief and the natural-image query thieves, so today's fp32 runs take longer
# (docs/BENCHMARKS.md, "python reproduce.py (seed 0)"); the start-up line quotes them
MEASURED_MINUTES = {("fmnist", "bf16"): {"AVX512-BF16": 9.2},
                    ("fmnist", "fp32"): {"AVX512-BF16, --amp none, before the present attacks": 7.8,
                                         "AVX2 only, before the present attacks": 11.7}}


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
    """Parse, plan, run, verify, write: the run of `args` (get_parser), its results.json record returned."""
    preset = cli.preset_of(args)
    plan = Plan(preset, args)
    stages = Stages(os.path.join(plan.out, "manifest.json"), args.force)
    tasks = [Task(j.stage, j.output, j.script, plan.argv(j), j.inputs, plan.settings(j)) for j in plan.jobs]
    if args.plan:
        return show_plan(plan, stages.status(tasks))
    reduce = answer_form(args, DATASETS[plan.dataset]["num_classes"])  # a bad --decimals or --top-k: before any job
    # one protocol per verdict column: the same test and m, each column's margin (presets: tau)
    protocols = {c: Protocol.from_preset(preset, "reference" if plan.reference else args.test, column=c) for c in COLUMNS}
    device = cli.get_device(args.gpu)
    cores = torch.get_num_threads()
    workers = args.workers or (1 if device.type == "cuda" else min(2, cores))
    pool = dict(workers=workers, threads=max(1, cores // workers))
    announce(args, device, **pool)
    t0 = time.time()
    os.makedirs(plan.out, exist_ok=True)
    # the external feature in this process, then every other job as soon as the jobs whose outputs it reads
    # are done, in `workers` processes at once (Stages.run_all), so that the stages overlap
    stages.run_all([t for t in tasks if t.stage == "embed"])
    stages.run_all([t for t in tasks if t.stage != "embed"], **pool)
    start = time.time()
    rows, probs = verify_suspects(plan, protocols, device, reduce)
    stages.timings.update(verify=round(time.time() - start, 1), total=round(time.time() - t0, 1))
    result = dict(preset=args.preset, seed=args.seed, scale=args.scale, protocol=dict(name=args.protocol,
                  **record_columns(protocols)), black_box=plan.black_box, black_box_feature=plan.black_box_feature,
                  white_box=plan.white_box, label_only=args.label_only, answers=dict(decimals=args.decimals, top_k=args.top_k),
                  method=plan.method, rows=rows,
                  classifiers=classifier_records(plan), timings=stages.timings)
    write_results(plan.out, result, probs)
    print(table(result))
    print(f"wrote {plan.out}/results.json, results.md, results.png, results-probs.png, probs.npz")
    return result


def show_plan(plan, status):
    """Print every job of the plan: done or pending and why, its output and its inputs (paths relative to
    the work folder). Returns {"jobs": [...], "pending": n}."""
    jobs = []
    for task, reason in status:
        reason = reason and reason.replace(plan.workdir + os.sep, "")
        jobs.append(dict(stage=task.stage, output=plan.relative(task.outputs), inputs=[plan.relative(p) for p in task.inputs],
                         done=reason is None, reason=reason))
        print(f"{'done   ' if reason is None else 'pending'}  {task.stage:9s} {jobs[-1]['output']}"
              + ("" if reason is None else f"  ({reason})"))
        if task.inputs:
            print(f"{'':19s}<- {', '.join(jobs[-1]['inputs'])}")
    n = sum(not j["done"] for j in jobs)
    print(f"{len(jobs)} jobs, {n} pending; then verification of {len(plan.suspects)} suspects "
          f"(manifest {os.path.join(plan.out, 'manifest.json')}, work folder {plan.workdir})")
    return dict(jobs=jobs, pending=n)


def verify_suspects(plan, protocols, device, reduce=None):
    """Each suspect of the plan in every verdict column, against the references the plan gives that
    column (Plan.columns): (rows of results.json, {column: dict(suspect=[(N,)], references=[(K, N)])}).
    `reduce`: the answer form of --decimals / --top-k (answer_form), applied to the black-box column."""
    args = plan.args
    images = role_data(plan.preset, plan.dirs["data"], args.seed, "styled-test", plan.preset["gamma"])
    verify = verifiers(plan.columns, images, plan.dataset, device, protocols, seed=args.seed, data_dir=plan.dirs["data"],
                       label_only=args.label_only, reduce=reduce)
    rows, probs = [], {column: dict(suspect=[], references=[]) for column in COLUMNS}
    for mode, path, arch in plan.suspects:
        model, ck = load_model(path, device=device)
        met = ck.get("metrics", {})
        row = dict(mode=mode, suspect=plan.relative(path), arch=arch, clean_acc=met.get("clean_acc"),
                   stylised_acc=met.get("stylised_acc"))
        for column in COLUMNS:
            r = verify[arch, column](model)
            row[column] = {k: r[k] for k in ("p_value", "delta_mu", "verdict")}
            probs[column]["suspect"].append(r["p_suspect"])
            probs[column]["references"].append(r["p_references"])
        rows.append(row)
    if plan.method == "both":
        add_dataset_inference(rows, plan, protocols["black-box"].alpha)
    add_transfer_gap(rows, len(plan.preset["independents"]))
    return rows, probs


def answer_form(args, num_classes):
    """answers.reducer of --decimals and --top-k (None for full answers). Raises UserError for a value
    out of range."""
    if args.decimals is not None and args.decimals < 0:
        raise UserError(f"--decimals {args.decimals}: give 0 or more decimals")
    if args.top_k is not None and not 1 <= args.top_k <= num_classes:
        raise UserError(f"--top-k {args.top_k}: give 1 to {num_classes} classes")
    return reducer(dict(decimals=args.decimals, top_k=args.top_k))


def add_dataset_inference(rows, plan, alpha):
    """The di and combined columns (constants.DI_COLUMNS) of each row, from the plan's Dataset Inference job
    (dataset_inference.py's JSON, its suspects by checkpoint path): di is its test on the first m images per
    side, with the labels it asked; combined is stolen when the black-box column's p or di's is below
    alpha / 2 (Bonferroni, ownership.dataset_inference.combined_verdict), its p-value min(1, 2 min(p, p_di))."""
    with open(plan.di_results) as f:
        by_path = {s["suspect"]: s for s in json.load(f)["suspects"]}
    for row in rows:
        r = by_path[os.path.abspath(os.path.join(plan.workdir, row["suspect"]))]
        row["di"] = dict(p_value=r["p_value"], delta_mu=r["delta_mu"], verdict=r["verdict"], queries=r["queries"])
        both = combined_verdict(row["black-box"]["p_value"], r["p_value"], alpha)
        row["combined"] = dict(p_value=both["p_value"], delta_mu=None, verdict=both["verdict"],
                               rejected_by=both["rejected_by"])


def add_transfer_gap(rows, n_independent):
    """Each row's transfer gap (issue 30; docs/VALIDITY.md, "Query thieves"): its stylised accuracy minus
    the mean of the run's first `n_independent` independent models' (the preset's, trained like the
    defender's, not --hard-negatives), None where an accuracy is missing. How much of the external feature
    a suspect carries beyond what any model of the task gets right on the stylised images."""
    base = [r["stylised_acc"] for r in rows if r["mode"] == "independent"][:n_independent]
    mean = sum(base) / len(base) if base and None not in base else None
    for r in rows:
        r["transfer_gap"] = None if mean is None or r["stylised_acc"] is None else r["stylised_acc"] - mean


def classifier_records(plan):
    """results.json's classifiers: {arch: {access: dict(path, held_out_acc, model_level, references,
    trained_on)}}, paths relative to the work folder."""
    out = {}
    for (arch, column), (path, refs) in plan.columns.items():
        if path is None:
            continue
        ck = load_checkpoint(path)
        out.setdefault(arch, {})[column] = dict(
            path=plan.relative(path), held_out_acc=ck.get("test_acc"), model_level=ck.get("model_level"),
            references=[plan.relative(r) for r in refs],
            trained_on={k: [plan.relative(m) for m in v] for k, v in ck.get("sources", {}).items()})
    return out



def verdict_columns(rows):
    """The verdict columns the rows have: constants.COLUMNS, then DI_COLUMNS with --method both."""
    return [c for c in COLUMNS + DI_COLUMNS if rows and all(c in r for r in rows)]


def table(result):
    """The results as a markdown table, one row per suspect, every verdict column."""
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    columns = verdict_columns(result["rows"])
    head = "| mode | suspect | arch | clean acc | stylised acc | transfer gap |" + " p | Δμ | verdict |".join(
        f" {a}" for a in columns) + " p | Δμ | verdict |"
    lines = [head, "|---" * (6 + 3 * len(columns)) + "|"]
    for r in result["rows"]:
        gap = r.get("transfer_gap")  # results.json of runs before the column: none
        cells = [r["mode"], r["suspect"], r["arch"], fmt(r["clean_acc"]), fmt(r["stylised_acc"]),
                 "—" if gap is None else f"{gap:+.3f}"]
        for a in columns:
            cells += [f"{r[a]['p_value']:.2e}", fmt(r[a]["delta_mu"]), r[a]["verdict"]]
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
    plot_p_values(result, os.path.join(out, "results.png"))
    plot(result, probs, os.path.join(out, "results-probs.png"))


P_CAP = 20  # results.png: bars of -log10 p above this are cut there and labelled with their value


def plot_p_values(result, path):
    """The verdicts at a glance (issue 31, item 5): per suspect, one bar per verdict column of -log10 p
    (capped at P_CAP), red where that column calls it stolen, blue where not, with the alpha line."""
    rows, alpha = result["rows"], result["protocol"]["alpha"]
    columns = verdict_columns(rows)
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(0.3 * len(rows) * len(columns) + 3, 4.5))
    for k, column in enumerate(columns):
        x = np.arange(len(rows)) + (k - (len(columns) - 1) / 2) * width
        h = np.array([-np.log10(max(r[column]["p_value"], 1e-300)) for r in rows])
        colours = ["tab:red" if r[column]["verdict"] == "stolen" else "tab:blue" for r in rows]
        ax.bar(x, np.minimum(h, P_CAP), width, color=colours, edgecolor="black", linewidth=0.4,
               hatch=("", "//", "..", "xx", "\\\\")[k % 5], label=column)
        for xi, hi in zip(x, h):
            if hi > P_CAP:
                ax.text(xi, P_CAP, f"{hi:.0f}", ha="center", va="bottom", fontsize=6)
    ax.axhline(-np.log10(alpha), color="black", linestyle="--", linewidth=0.8, label=f"alpha = {alpha}")
    ax.set_xticks(range(len(rows)), [f"{r['mode']} {r['arch']}" for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("-log10 p")
    ax.set_ylim(0, P_CAP * 1.3)  # room for the legend
    legend = ax.legend(fontsize=7, ncol=len(columns) + 1, loc="upper right")
    for patch in legend.get_patches():
        patch.set_facecolor("white")  # the hatch names the column; the colour is the verdict
    ax.set_title(f"{result['preset']} (seed {result['seed']}): red = stolen, blue = not stolen; one bar per column")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def plot(result, probs, path):
    """Box plots of per-image P(stolen) (results-probs.png): each suspect (red), then each architecture's
    references (grey)."""
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
