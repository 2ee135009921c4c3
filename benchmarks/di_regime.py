"""Dataset Inference's signal against the victim's training length (issue 31, "The regime").

    python benchmarks/di_regime.py [--epochs 4 16 64] [--fit-images 150] [--test-images 100] \
        [--independent model/independent/indep1-wrn10-1.pt]

Run in a work folder where `python reproduce.py` has run (it needs data/ with the stylised set). For each
victim length E it trains a victim of the preset's architecture for E epochs on its part (train_model.py
--role victim --epochs E, the preset's recipe otherwise, so its one-cycle schedule stretches over E
epochs), a label-query thief of it (steal.py --mode label-query, the preset's attack), and runs
dataset_inference.py (Blind Walk, the preset's DI settings) with the victim itself (the source), the thief
and --independent (trained on data no victim saw: a negative) as suspects. Models go to
model/regime/, DI's results to results/<dataset>/di-regime-e<E>.json (the first free name, never
another run's); the last line is one JSON object: per E the victim's private/public accuracy and, per
suspect, p (first m images per side), p and Δμ on all test images, and the detection rate over disjoint
draws. Docs: docs/DATASET_INFERENCE.md, "The regime".
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dataset_inference  # noqa: E402
import steal  # noqa: E402
import train_model  # noqa: E402
from ownership import jsonio  # noqa: E402
from ownership.presets import DATASETS, get_preset  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="fmnist")
    p.add_argument("--epochs", type=int, nargs="+", default=[4, 16, 64], help="victim training lengths")
    p.add_argument("--fit-images", type=int, default=150, help="images per side to fit DI's regressor")
    p.add_argument("--test-images", type=int, default=100, help="images per side to test each suspect")
    p.add_argument("--independent", default="model/independent/indep1-wrn10-1.pt",
                   help="a model trained on data no victim saw (reproduce.py's first independent model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", default="auto")
    return p


def one_length(a, preset, epochs):
    """Train the E-epoch victim and its label-query thief (skipped where they exist), then run DI."""
    victim = f"model/regime/vict-e{epochs}-{DATASETS[preset['dataset']]['victim_arch']}.pt"
    thief = f"model/regime/atta-label-e{epochs}-{DATASETS[preset['dataset']]['attacker_arch']}.pt"
    common = ["--preset", a.preset, "--seed", str(a.seed), "--amp", a.amp]
    if not os.path.exists(victim):
        train_model.main(train_model.get_parser().parse_args(
            ["--role", "victim", "--epochs", str(epochs), "--out", victim] + common))
    if not os.path.exists(thief):
        steal.main(steal.get_parser().parse_args(
            ["--mode", "label-query", "--victim", victim, "--out", thief] + common))
    start = time.time()
    r = dataset_inference.main(dataset_inference.get_parser().parse_args(
        ["--victim", victim, "--s", victim, thief, a.independent, "--preset", a.preset, "--seed", str(a.seed),
         "--fit-images", str(a.fit_images), "--test-images", str(a.test_images),
         "--out", jsonio.first_free(f"results/{preset['dataset']}/di-regime-e{epochs}")]))
    names = ("source", "label-query", "independent")
    return dict(epochs=epochs, seconds=round(time.time() - start, 1), fit=r["fit"], suspects={
        n: {k: s.get(k) for k in ("p_value", "p_all", "delta_mu", "delta_mu_all", "detection_rate", "draws", "mean_stop",
                                  "clean_accuracy", "walks_capped", "queries")} for n, s in zip(names, r["suspects"])})


def main(args):
    a = get_parser().parse_args(args)
    preset = get_preset(a.preset)
    rows = [one_length(a, preset, e) for e in a.epochs]
    for r in rows:
        s = r["suspects"]
        print(f"E={r['epochs']}: " + "; ".join(f"{n} p {v['p_value']:.3g} (all {v['p_all']:.3g}, dmu {v['delta_mu_all']:+.3f})"
                                             for n, v in s.items()), file=sys.stderr)
    print(json.dumps(dict(preset=a.preset, seed=a.seed, rows=rows)))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
