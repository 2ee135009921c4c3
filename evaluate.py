"""Validity over seeds: repeat the whole pipeline with new victims, benign models, attackers and
independent models for each seed, and measure how often each verdict is right.

    python evaluate.py --preset fmnist --seeds 5 --first-seed 15
    python evaluate.py --preset smoke --seeds 2
    python evaluate.py --preset fmnist --seeds 5 --first-seed 5 --aggregate-only --grid-m 10 20 50 --grid-tau 0 0.1

Each seed runs reproduce.py into results/<preset>/seeds-<float path>/<seed>/ (resumable; bf16 or fp32, the
training precision that --amp gives on this machine, so both paths can be studied side by side). Writes
results/<preset>/validity-<float path>[-<black-box>]-seeds<first>-<last>.{json,md,png} with, for each access: the fraction of
seeds in which each attack is detected at the run's alpha (one verification per seed), the rate over
every disjoint draw of m images, the median p and delta mu, the false-positive rate on independent
models (the preset's, and its harder negatives: independent models trained with recipes the defender
never used, reproduce.py --hard-negatives), the number of queried images m needed to reach p < alpha (sweep m = 2 ... --max-m on the
first m images of a seeded order), and the rate over all draws on a grid of m and tau (--grid-m,
--grid-tau), recomputed from the saved probabilities with the run's test (no model is run), and the
verdicts on --untrained freshly initialised models per architecture and seed (never trained: a model
whose predictions do not depend on its input must not look stolen; docs/VALIDITY.md, "Untrained
models"), verified like any suspect with the seed's classifiers and references (also with
--aggregate-only: it runs no stage of the pipeline, only verification).
"""
import dataclasses
import json
import os
import shutil

import matplotlib
import numpy as np
import torch
from tqdm import tqdm

import reproduce
from network import get_model
from ownership import cli, jsonio, seeds
from ownership.data import role_data
from ownership.presets import DATASETS, get_preset
from ownership.answers import reducer
from ownership.checkpoints import atomic_write
from ownership.constants import BLACK_BOX, BLACK_BOX_FEATURES, COLUMNS, DI_COLUMNS, METHODS, REPO
from ownership.errors import UserError
from ownership.training import amp_name
from ownership.verify import describe, detection_rate, protocols_from_record, record_columns, test, verifiers

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)


def get_parser():
    p = cli.Parser(__doc__)
    cli.add_preset(p)
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--max-m", type=int, default=100, help="largest m of the sweep (at most the pool of stylised test images)")
    p.add_argument("--grid-m", type=int, nargs="+", default=[10, 20, 30, 50], help="m values of the (m, tau) grid")
    p.add_argument("--grid-tau", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.15],
                   help="tau values of the (m, tau) grid")
    p.add_argument("--out", default=None, help="default: results/<preset>")
    p.add_argument("--gpu", type=int, default=None)
    p.add_argument("--black-box", default=None, choices=BLACK_BOX,
                   help="the black-box classifier (default: the preset's); another one reuses the seeds' models and "
                        "writes its own results")
    p.add_argument("--black-box-feature", default=None, choices=BLACK_BOX_FEATURES,
                   help="the black-box classifiers' features (default: the preset's); another one reuses the seeds' "
                        "models and writes its own results")
    p.add_argument("--label-only", action="store_true",
                   help="black-box verdicts from top labels only, with classifiers trained on top labels (reproduce.py "
                        "--label-only); reuses the seeds' models")
    cli.add_amp(p)
    p.add_argument("--decimals", type=int, default=None,
                   help="black-box verdicts from answers rounded to this many decimals (reproduce.py --decimals); "
                        "reuses the seeds' models")
    p.add_argument("--top-k", type=int, default=None,
                   help="black-box verdicts from each answer's K most probable classes (reproduce.py --top-k); reuses "
                        "the seeds' models")
    p.add_argument("--method", default=None, choices=METHODS,
                   help="both: also Dataset Inference's column and the combined verdict per seed (reproduce.py --method "
                        "both; minutes per suspect), their detection and false-positive rates in the table")
    p.add_argument("--untrained", type=int, default=None,
                   help="freshly initialised models per architecture and seed to verify, in every column (default 10, "
                        "0 with --aggregate-only; 0: none)")
    p.add_argument("--aggregate-only", action="store_true",
                   help="do not run anything: aggregate the seeds' existing results.json and probs.npz (with "
                        "--untrained K, verify those models too)")
    p.add_argument("--debug", action="store_true")
    return p


def m_sweep(p_s, refs, protocol, *, seed, ms, order):
    """The protocol's test on the first m images of `order`, for each m in `ms`: p-values."""
    return [test(p_s, refs, dataclasses.replace(protocol, m=m), seed=seed, images=order[:m])["p_value"] for m in ms]


def run_seeds(args, out, variant):
    """(seed, results.json, probs) of every seed: run (resumable) or, with --aggregate-only, read. A
    --black-box variant writes results-<variant>/ next to results/ and starts from its manifest, so the
    models are reused."""
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        work = os.path.join(out, f"seeds-{variant[0]}", str(seed))
        results = os.path.join(work, "results" + "".join(f"-{v}" for v in variant[1:]))
        if len(variant) > 1 and not os.path.exists(os.path.join(results, "manifest.json")) \
                and os.path.exists(os.path.join(work, "results", "manifest.json")):
            os.makedirs(results, exist_ok=True)
            shutil.copy(os.path.join(work, "results", "manifest.json"), os.path.join(results, "manifest.json"))
        if args.aggregate_only:
            if not os.path.exists(os.path.join(results, "results.json")):
                print(f"seed {seed}: no {results}/results.json; skipped")
                continue
            with open(os.path.join(results, "results.json")) as f:
                res = json.load(f)
        else:
            print(f"== seed {seed}")
            argv = ["--preset", args.preset, "--seed", str(seed), "--scale", str(args.scale), "--amp", args.amp,
                    "--workdir", work, "--out", results, "--hard-negatives"] + ["--gpu", str(args.gpu)] * (args.gpu is not None) \
                + ["--black-box", args.black_box] * (args.black_box is not None) + ["--label-only"] * args.label_only \
                + ["--black-box-feature", args.black_box_feature] * (args.black_box_feature is not None) \
                + ["--decimals", str(args.decimals)] * (args.decimals is not None) \
                + ["--top-k", str(args.top_k)] * (args.top_k is not None) \
                + ["--method", args.method] * (args.method is not None)
            res = reproduce.main(reproduce.get_parser().parse_args(argv))
        runs.append((seed, res, reproduce.load_probs(results)))
    if not runs:
        raise UserError(f"no finished seeds under {out}/seeds; run without --aggregate-only")
    return runs


def main(args):
    if args.untrained is None:
        args.untrained = 0 if args.aggregate_only else 10
    if args.untrained < 0:
        raise UserError(f"--untrained {args.untrained}: give 0 (none) or more models per architecture and seed")
    out = args.out or os.path.join(REPO, "results", args.preset)
    variant = [amp_name(cli.get_device(args.gpu), args.amp)] + [args.black_box] * (args.black_box is not None) \
        + [args.black_box_feature] * (args.black_box_feature is not None) + ["labels"] * args.label_only \
        + [f"dec{args.decimals}"] * (args.decimals is not None) + [f"top{args.top_k}"] * (args.top_k is not None) \
        + ["di"] * (args.method == "both")
    runs = run_seeds(args, out, variant)
    # one file per float path, classifier variant and seed range, so a study of other seeds never
    # overwrites this one's
    name = "validity-" + "-".join(variant + [f"seeds{args.first_seed}-{args.first_seed + args.seeds - 1}"])
    protocols = protocols_from_record(runs[0][1]["protocol"])  # tau: one number, or one per column
    pool = runs[0][2][COLUMNS[0]][0].shape[1]
    ms = list(range(2, min(args.max_m, pool) + 1))
    grid = [(m, tau) for m in args.grid_m if m <= pool for tau in args.grid_tau]
    modes = list(dict.fromkeys(r["mode"] for r in runs[0][1]["rows"]))
    table = {access: {} for access in COLUMNS}
    for access in COLUMNS:
        protocol = protocols[access]
        for mode in modes:
            ps, mus, needed, curves, draws, by_grid = [], [], [], [], [], {g: [] for g in grid}
            for seed, res, probs in runs:
                for i, row in enumerate(res["rows"]):
                    if row["mode"] != mode:
                        continue
                    ps.append(row[access]["p_value"])
                    mus.append(row[access]["delta_mu"])
                    p_s, refs = probs[access][0][i], probs[access][1][i]
                    order = np.random.default_rng(seed).permutation(len(p_s))
                    draws.append(detection_rate(p_s, refs, protocol, seed=seed, order=order))
                    for m, tau in grid:
                        by_grid[m, tau].append(detection_rate(p_s, refs, dataclasses.replace(protocol, m=m, tau=tau),
                                                              seed=seed, order=order))
                    curve = m_sweep(p_s, refs, protocol, seed=seed, ms=ms, order=order)
                    curves.append(curve)
                    hit = [m for m, p in zip(ms, curve) if p < protocol.alpha]
                    needed.append(hit[0] if hit else None)
            found = [n for n in needed if n is not None]
            table[access][mode] = dict(
                n=len(ps), detected=float(np.mean([p < protocol.alpha for p in ps])), all_draws=float(np.mean(draws)),
                median_p=float(np.median(ps)), median_delta_mu=float(np.median(mus)),
                median_m_needed=(float(np.median(found)) if len(found) == len(needed) else None),
                m_needed=needed, p_values=ps, median_curve=np.median(np.array(curves), 0).tolist(),
                grid=[dict(m=m, tau=tau, mean=float(np.mean(v)), worst=float(max(v) if mode == "independent" else min(v)))
                      for (m, tau), v in by_grid.items()])
    result = dict(preset=args.preset, seeds=[seed for seed, _, _ in runs], float_path=variant[0],
                  classifiers=classifier_quality(runs),
                  black_box=runs[0][1]["black_box"],
                  black_box_feature=runs[0][1].get("black_box_feature", "prediction-shift"), label_only=runs[0][1]["label_only"],
                  answers=runs[0][1].get("answers") or dict(decimals=None, top_k=None),
                  protocol=record_columns(protocols), ms=ms,
                  false_positive_rate={a: table[a]["independent"]["detected"] for a in COLUMNS if "independent" in modes},
                  false_positive_rate_all_draws={a: table[a]["independent"]["all_draws"] for a in COLUMNS
                                                 if "independent" in modes},
                  rows=table, accuracy={mode: float(np.median([r["clean_acc"] for _, res, _ in runs for r in res["rows"]
                                                               if r["mode"] == mode])) for mode in modes},
                  transfer_gap=transfer_gaps(runs, modes), dataset_inference=di_rates(runs, modes))
    if args.untrained:
        result["untrained"] = untrained_verdicts(args, out, variant, runs, protocols)
    jsonio.write(os.path.join(out, name + ".json"), result)
    md = render(result)
    atomic_write(os.path.join(out, name + ".md"), lambda tmp: open(tmp, "w").write(md))
    plot(result, os.path.join(out, name + ".png"))
    print(md)
    return result


def transfer_gaps(runs, modes):
    """Per mode, the median over seeds and models of the transfer gap (reproduce.add_transfer_gap: stylised
    accuracy minus the seed's preset independent models' mean), recomputed from the rows' accuracies so
    that runs made before the column count too; None where a run lacks accuracies."""
    gaps = {mode: [] for mode in modes}
    for _, res, _ in runs:
        rows = [dict(r) for r in res["rows"]]
        reproduce.add_transfer_gap(rows, len(get_preset(res["preset"], res["scale"])["independents"]))
        for r in rows:
            gaps[r["mode"]].append(r["transfer_gap"])
    return {mode: None if not g or None in g else float(np.median(g)) for mode, g in gaps.items()}


def di_rates(runs, modes):
    """{column: {mode: dict(n, detected, median_p)}} of the DI columns (constants.DI_COLUMNS) the runs'
    rows have (reproduce.py --method both), or {} where they have none: the fraction of (seed, model)
    pairs called stolen; for `independent` a false-positive rate. Their p comes from one test per
    suspect, so there is no rate over draws or m sweep as for MOVE's columns."""
    rows = [r for _, res, _ in runs for r in res["rows"]]
    out = {}
    for column in DI_COLUMNS:
        if not rows or not all(column in r for r in rows):
            continue
        out[column] = {}
        for mode in modes:
            ps = [r[column]["p_value"] for r in rows if r["mode"] == mode]
            out[column][mode] = dict(n=len(ps), median_p=float(np.median(ps)),
                                     detected=float(np.mean([r[column]["verdict"] == "stolen" for r in rows
                                                             if r["mode"] == mode])))
    return out


def untrained_verdicts(args, out, variant, runs, protocols):
    """Verify args.untrained freshly initialised models per architecture and seed (initialisation seed
    seeds.derive(seed, 'untrained', arch, k): none of them is a model the defender trained) with each
    seed's classifiers and references, every column. Returns {column: {arch: dict(n, flagged, min_p,
    max_delta_mu, p_values, delta_mu)}}: `flagged` counts p < alpha, a false positive."""
    device = cli.get_device(args.gpu)
    found = {}
    for seed, res, _ in tqdm(runs, desc="untrained models", unit="seed"):
        preset = get_preset(res["preset"], res["scale"])  # the seed's own images, as its run saw them
        d = DATASETS[preset["dataset"]]
        work = os.path.join(out, f"seeds-{variant[0]}", str(seed))
        data_dir = os.path.join(work, "data")
        images = role_data(preset, data_dir, seed, "styled-test", preset["gamma"])
        columns = {}
        for arch, by_access in res["classifiers"].items():
            for column in COLUMNS:  # the baseline has no classifier: the white-box column's references
                c = by_access.get(column) or by_access["white-box"]
                columns[arch, column] = (os.path.join(work, c["path"]) if column in by_access else None,
                                         [os.path.join(work, r) for r in c["references"]])
        verify = verifiers(columns, images, preset["dataset"], device, protocols, seed=seed, data_dir=data_dir,
                           label_only=res["label_only"], reduce=reducer(res.get("answers") or {}))
        for arch in res["classifiers"]:
            by_column = {column: verify[arch, column] for column in COLUMNS}
            for k in range(args.untrained):  # each model built once, verified in every column
                torch.manual_seed(seeds.derive(seed, "untrained", arch, k))
                model = get_model(arch, d["num_classes"], d["channels"]).to(device).eval()
                for column, verifier in by_column.items():
                    r = verifier(model)
                    f = found.setdefault(column, {}).setdefault(arch, dict(p_values=[], delta_mu=[]))
                    f["p_values"].append(r["p_value"])
                    f["delta_mu"].append(r["delta_mu"])
    for column, by_arch in found.items():
        for f in by_arch.values():
            f.update(n=len(f["p_values"]), flagged=int(sum(p < protocols[column].alpha for p in f["p_values"])),
                     min_p=min(f["p_values"]), max_delta_mu=max(f["delta_mu"]))
    return found


def classifier_quality(runs):
    """Per column and architecture, over the seeds: the model-level AUC of the meta-classifier (leave one
    model out, train_clf.py) and the spread (max - min) of the held-out references' mean P(stolen), which a
    classifier that recognises the feature, not the models it saw, keeps small (docs/VALIDITY.md)."""
    out = {}
    for column in COLUMNS:
        for arch in dict.fromkeys(r["arch"] for r in runs[0][1]["rows"]):
            aucs, spreads = [], []
            for _, res, probs in runs:
                i = next(k for k, r in enumerate(res["rows"]) if r["arch"] == arch)
                means = probs[column][1][i].mean(1)  # each reference's mean over the images
                spreads.append(float(means.max() - means.min()))
                level = res["classifiers"].get(arch, {}).get(column, {}).get("model_level")
                aucs.append(level["auc"] if level else None)
            out.setdefault(column, {})[arch] = dict(model_auc=aucs, reference_spread=spreads)
    return out


def answers_note(form):
    """' (answers rounded to D decimals, top-k)' for a run on reduced answers, '' for full ones."""
    parts = [f"rounded to {form['decimals']} decimals"] * (form.get("decimals") is not None) \
        + [f"top-{form['top_k']} classes"] * (form.get("top_k") is not None)
    return f" (answers {', '.join(parts)})" if parts else ""


def render(result):
    """validity.json as markdown: the rates table (with the median transfer gap), the false-positive lines (independent and, where
    verified, untrained models), the classifiers' quality, the (m, tau) grid."""
    proto = result["protocol"]
    fmt_m = lambda v: "—" if v is None else f"{v:g}"  # noqa: E731
    lines = [f"# Validity on preset `{result['preset']}`, seeds {result['seeds']}, {result['float_path']} training, "
             f"{result['black_box']} black-box classifier on {result['black_box_feature']}" + (" (labels only)" if result["label_only"] else "") + answers_note(result.get("answers") or {}), "",
             f"Test: {proto['description']}, m = {describe(proto['m'])}, tau = {describe(proto['tau'])}, "
             f"alpha = {proto['alpha']}. "
             "Detected: fraction of (seed, model) pairs with p < alpha (one draw of m images each, as a defender "
             "would run it). All draws: the same over every disjoint draw of m images from each seed's pool of "
             "stylised test images. For `independent` both are false-positive rates. m needed: median smallest m "
             "with p < alpha ('—' if some seed never got there).", "",
             "| mode | median clean acc | median transfer gap | " + " | ".join(
                 f"{a} detected | all draws | median p | median Δμ | m needed" for a in COLUMNS) + " |",
             "|---|---|---|" + "---|" * (5 * len(COLUMNS))]
    gaps = result.get("transfer_gap", {})  # validity.json before the column: none
    for mode, acc in result["accuracy"].items():
        cells = []
        for a in COLUMNS:
            r = result["rows"][a][mode]
            cells += [f"{r['detected']:.2f} ({r['n']})", f"{r['all_draws']:.2f}", f"{r['median_p']:.2e}",
                      f"{r['median_delta_mu']:.3f}", fmt_m(r["median_m_needed"])]
        gap = gaps.get(mode)
        lines.append(f"| {mode} | {acc:.3f} | {'—' if gap is None else f'{gap:+.3f}'} | " + " | ".join(cells) + " |")
    for column, by_mode in (result.get("dataset_inference") or {}).items():
        lines += ["", f"{column} ({'Dataset Inference, Blind Walk' if column == 'di' else 'MOVE black-box or di at alpha/2'}), "
                  "detected (pairs) and median p: " + "; ".join(f"{mode} {r['detected']:.2f} ({r['n']}, {r['median_p']:.2e})"
                                                          for mode, r in by_mode.items()) + "."]
    fpr, fpr_all = result["false_positive_rate"], result["false_positive_rate_all_draws"]
    lines += ["", "False-positive rate on independent models: " + ", ".join(
        f"{a} {fpr[a]:.2f} (all draws {fpr_all[a]:.3f})" for a in fpr) + "."]
    if result.get("untrained"):
        lines += ["", "Untrained (freshly initialised) models, flagged / verified (smallest p, largest Δμ): " + "; ".join(
            f"{column} {arch} {u['flagged']}/{u['n']} ({u['min_p']:.2g}, {u['max_delta_mu']:.3f})"
            for column, by_arch in result["untrained"].items() for arch, u in by_arch.items()) + "."]
    lines += ["",
        "Per classifier, one value per seed: the model-level AUC (leave pair out; '—' where none) and "
        "the spread (max - min) of the held-out references' mean P(stolen).", "",
        "| column | arch | model-level AUC | reference spread |", "|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    for column, by_arch in result["classifiers"].items():
        for arch, q in by_arch.items():
            lines.append(f"| {column} | {arch} | {' '.join(map(fmt, q['model_auc']))} | "
                         f"{' '.join(map(fmt, q['reference_spread']))} |")
    lines.append("")
    for a in COLUMNS:
        lines += [f"Rate over all draws on a grid of m and tau ({a}, the run's test): mean over seeds (worst seed: "
                  "the lowest for attacks, the highest for independent models).", "",
                  "| m | τ | " + " | ".join(result["accuracy"]) + " |", "|---|---|" + "---|" * len(result["accuracy"])]
        for k, g in enumerate(result["rows"][a][next(iter(result["accuracy"]))]["grid"]):
            cells = [f"{result['rows'][a][mode]['grid'][k]['mean']:.3f} ({result['rows'][a][mode]['grid'][k]['worst']:.2f})"
                     for mode in result["accuracy"]]
            lines.append(f"| {g['m']} | {g['tau']:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(result, path):
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(11, 4), sharey=True)
    for ax, access in zip(axes, COLUMNS):
        for mode, row in result["rows"][access].items():
            ax.semilogy(result["ms"], np.maximum(row["median_curve"], 1e-300), label=mode)
        ax.axhline(result["protocol"]["alpha"], color="k", ls="--", lw=0.8)
        ax.set_xlabel("m (queried images)")
        ax.set_title(access)
    axes[0].set_ylabel("median p-value over seeds")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    cli.run(main, get_parser())
