"""Validity over seeds: repeat the whole pipeline with new victims, benign models, attackers and
independent models for each seed, and measure how often each verdict is right.

    python evaluate.py --preset fmnist --seeds 5
    python evaluate.py --preset smoke --seeds 2

Each seed runs reproduce.py into results/<preset>/seeds/<seed>/ (resumable). Writes
results/<preset>/validity.json, validity.md and validity.png with, for white-box and black-box access:
the fraction of seeds in which each attack is detected at alpha = 0.01, the median p and delta mu,
the false-positive rate over all independent models, and the number of queried images m needed to
reach p < 0.01 (sweep m = 2...--max-m, the run's test and tau on the first m images of a seeded order).
"""
import json
import os

import numpy as np

import reproduce
from ownership import cli, verify
from ownership.checkpoints import atomic_write
from ownership.presets import PRESETS

ACCESSES = reproduce.ACCESSES
TAUS = [0.0, 0.1, 0.2, 0.3]  # margins of the paired test, re-evaluated on the saved probabilities (a sweep, not a fit)


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--preset", default="fmnist", choices=list(PRESETS))
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--max-m", type=int, default=100, help="largest m of the sweep (at most the pool of stylised test images)")
    p.add_argument("--out", default=None, help="default: results/<preset>")
    p.add_argument("--gpu", type=int, default=None)
    cli.add_amp(p)
    p.add_argument("--aggregate-only", action="store_true",
                   help="do not run anything: aggregate the seeds' existing results.json and probs.npz")
    p.add_argument("--debug", action="store_true")
    return p


def m_sweep(p_s, refs, ms, seed, test_name, order, tau=0.0):
    """The run's test on the first m images of `order`, for each m: p-values."""
    return [verify.test(p_s, refs, m, tau, test_name, seed, images=order[:m])["p_value"] for m in ms]


def main(args):
    out = args.out or os.path.join(cli.REPO, "results", args.preset)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    runs = []
    for seed in seeds:
        work = os.path.join(out, "seeds", str(seed))
        argv = ["--preset", args.preset, "--seed", str(seed), "--scale", str(args.scale), "--amp", args.amp, "--workdir", work,
                "--out", os.path.join(work, "results")]
        if args.gpu is not None:
            argv += ["--gpu", str(args.gpu)]
        if args.aggregate_only:
            path = os.path.join(work, "results", "results.json")
            if not os.path.exists(path):
                print(f"seed {seed}: no {path}; skipped")
                continue
            with open(path) as f:
                res = json.load(f)
        else:
            print(f"== seed {seed}")
            res = reproduce.main(reproduce.get_parser().parse_args(argv))
        probs = np.load(os.path.join(work, "results", "probs.npz"))
        runs.append((seed, res, probs))

    if not runs:
        raise cli.UserError(f"no finished seeds under {out}/seeds; run without --aggregate-only")
    seeds = [seed for seed, _, _ in runs]
    alpha = verify.ALPHA
    pool = min(runs[0][2][k].shape[-1] for k in runs[0][2].files)
    ms = list(range(2, min(args.max_m, pool) + 1))
    modes = list(dict.fromkeys(r["mode"] for r in runs[0][1]["rows"]))
    table = {}
    for access in ACCESSES:
        key = "" if access == "white-box" else "bb_"
        for mode in modes:
            ps, mus, needed, curves, draws, by_tau = [], [], [], [], [], {t: [] for t in TAUS}
            for seed, res, probs in runs:
                for i, row in enumerate(res["rows"]):
                    if row["mode"] != mode:
                        continue
                    ps.append(row[key + "p_value"])
                    mus.append(row[key + "delta_mu"])
                    name = f"{i}:{mode}:{access}"
                    p_s, refs = probs[name + ":suspect"], list(probs[name + ":references"])
                    test_name = res.get("test_name", "paper")
                    for t in TAUS:  # the paper's test on the same m images as the row's test, other margins
                        by_tau[t].append(verify.test(p_s, refs, res["m"], t, "paper", seed)["p_value"] < alpha)
                    order = np.random.default_rng(seed).permutation(len(p_s))
                    tau = res.get("tau", 0.0)
                    curve = m_sweep(p_s, refs, ms, seed, test_name, order, tau)
                    draws.append(verify.detection_rate(p_s, refs, res["m"], test_name, tau, seed=seed, order=order))
                    curves.append(curve)
                    hit = [m for m, p in zip(ms, curve) if p < alpha]
                    needed.append(hit[0] if hit else None)
            flagged = [p < alpha for p in ps]
            found = [n for n in needed if n is not None]
            table[f"{access}/{mode}"] = dict(
                access=access, mode=mode, n=len(ps), detected=float(np.mean(flagged)),
                all_draws=float(np.mean(draws)),
                median_p=float(np.median(ps)), median_delta_mu=float(np.median(mus)),
                median_m_needed=(float(np.median(found)) if len(found) == len(needed) else None),
                m_needed=needed, p_values=ps, median_curve=np.median(np.array(curves), 0).tolist(),
                detected_by_tau={str(t): float(np.mean(v)) for t, v in by_tau.items()})
    fpr = {a: table[f"{a}/independent"]["detected"] for a in ACCESSES if f"{a}/independent" in table}
    fpr_all = {a: table[f"{a}/independent"]["all_draws"] for a in ACCESSES if f"{a}/independent" in table}
    result = dict(preset=args.preset, seeds=seeds, alpha=alpha, ms=ms, false_positive_rate=fpr,
                  false_positive_rate_all_draws=fpr_all, test=runs[0][1].get("test"), m=runs[0][1].get("m"),
                  tau=runs[0][1].get("tau"), rows=table,
                  accuracy={mode: float(np.median([r["clean_acc"] for _, res, _ in runs for r in res["rows"]
                                                   if r["mode"] == mode])) for mode in modes})
    atomic_write(os.path.join(out, "validity.json"), lambda tmp: open(tmp, "w").write(json.dumps(result, indent=1)))
    md = render(result)
    atomic_write(os.path.join(out, "validity.md"), lambda tmp: open(tmp, "w").write(md))
    plot(result, os.path.join(out, "validity.png"))
    print(md)
    return result


def render(result):
    n = len(result["seeds"])
    lines = [f"# Validity on preset `{result['preset']}` over {n} seeds (alpha = {result['alpha']})", "",
             f"Test: {result.get('test', 'paper')}, m = {result.get('m')} images, tau = {result.get('tau')}. Detected: fraction of (seed, model) pairs with p < alpha "
             "(one draw of m images each, as a defender would run it). All draws: the same over every disjoint "
             "draw of m images from each seed's pool of stylised test images, a finer estimate of the same rate. "
             "For `independent` both are false-positive rates. m needed: median smallest m with p < alpha ('—' "
             "if some seed never got there).", "",
             "| mode | median clean acc | white-box detected | all draws | median p | median Δμ | m needed | "
             "black-box detected | all draws | median p | median Δμ | m needed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt_m = lambda v: "—" if v is None else f"{v:g}"  # noqa: E731
    for mode, acc in result["accuracy"].items():
        w, b = result["rows"][f"white-box/{mode}"], result["rows"][f"black-box/{mode}"]
        lines.append(f"| {mode} | {acc:.3f} | {w['detected']:.2f} ({w['n']}) | {w['all_draws']:.2f} | "
                     f"{w['median_p']:.2e} | {w['median_delta_mu']:.3f} | {fmt_m(w['median_m_needed'])} | "
                     f"{b['detected']:.2f} ({b['n']}) | {b['all_draws']:.2f} | {b['median_p']:.2e} | "
                     f"{b['median_delta_mu']:.3f} | {fmt_m(b['median_m_needed'])} |")
    fpr = result["false_positive_rate"]
    fpr_all = result.get("false_positive_rate_all_draws", {})
    lines += ["", f"False-positive rate on independent models: white-box {fpr.get('white-box')}, "
                  f"black-box {fpr.get('black-box')} (over all draws: white-box {fpr_all.get('white-box', 0):.3f}, "
                  f"black-box {fpr_all.get('black-box', 0):.3f}).", "",
              "Detection rate at other margins tau of the paper's paired test against the first reference (H0: "
              "mean(p_S - p_B) <= tau), recomputed on the same images from the saved probabilities. A sweep to show the trade-off, not a fitted default "
              "(the runs above use the preset's tau).", "",
              "| mode | " + " | ".join(f"{a} τ={t:g}" for a in ("white-box", "black-box") for t in TAUS) + " |",
              "|---|" + "---|" * (2 * len(TAUS))]
    for mode in result["accuracy"]:
        cells = [f"{result['rows'][f'{a}/{mode}']['detected_by_tau'][str(t)]:.2f}"
                 for a in ("white-box", "black-box") for t in TAUS]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, access in zip(axes, ACCESSES):
        for key, row in result["rows"].items():
            if row["access"] == access:
                ax.semilogy(result["ms"], np.maximum(row["median_curve"], 1e-300), label=row["mode"])
        ax.axhline(result["alpha"], color="k", ls="--", lw=0.8)
        ax.set_xlabel("m (queried images)")
        ax.set_title(access)
    axes[0].set_ylabel("median p-value over seeds")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    cli.run(main, get_parser())
