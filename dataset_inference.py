"""Dataset Inference (Maini et al., ICLR 2021) for a victim and suspects given as checkpoints.

    python dataset_inference.py --victim model/victim/vict-wrn16-1.pt \
        --s model/victim/vict-wrn16-1.pt model/attack/atta-label-wrn10-1.pt [--preset fmnist] [--m 10]
        [--norms linf l2 l1] [--feature blind-walk|mingd] [--walk-scale 4]

Fits DI's confidence regressor on the victim alone (its private and public fit images), then tests each
suspect: one-sided Welch t-test of public scores above private ones on the first m test images per side
(ownership/dataset_inference.py, docs/DATASET_INFERENCE.md). Pass the victim in --s to measure the source.
Prints p, delta mu and label queries per suspect, then writes JSON to results/<dataset>/di-<victim>-<feature>
[-<k>].json (the first free name; an existing --out is replaced only with --force).
"""
import os
import time

from ownership import cli, jsonio
from ownership import dataset_inference as di
from ownership.checkpoints import load_model
from ownership.constants import ALPHA, DI_FEATURES, DI_NORMS
from ownership.errors import UserError
from ownership.presets import DATASETS, DI


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--victim", required=True, help="victim checkpoint (its record gives the split and seed)")
    p.add_argument("--s", dest="suspects", nargs="+", required=True, help="suspect checkpoint(s)")
    p.add_argument("--feature", default="blind-walk", choices=DI_FEATURES,
                   help="blind-walk: top-1 labels only (black-box); mingd: gradients (white-box)")
    p.add_argument("--norms", nargs="+", default=list(DI_NORMS), choices=DI_NORMS)
    p.add_argument("--m", type=int, default=None, help=f"images per side of the test (default {DI['m']})")
    p.add_argument("--alpha", type=float, default=ALPHA)
    p.add_argument("--fit-images", type=int, default=None,
                   help=f"images per side that fit the regressor (default: the preset's di_images, else {DI['fit_images']})")
    p.add_argument("--test-images", type=int, default=None,
                   help=f"images per side that test each suspect (default: the preset's di_images, else {DI['test_images']})")
    p.add_argument("--walk-scale", type=float, default=None,
                   help="Blind Walk step factor (default: presets.DI walk_scale of the dataset)")
    p.add_argument("--steps", type=int, default=None, help=f"Blind Walk steps (default {DI['walk']['steps']})")
    p.add_argument("--out", default=None, help="results file (default: results/<dataset>/di-<victim>-<feature>.json)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--results-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    cli.add_preset(p)
    cli.add_common(p, dataset=False)
    p.set_defaults(seed=None)
    return p


def out_path(args, dataset):
    """--out, or the first free results/<dataset>/di-<victim>-<feature>[-<k>].json."""
    if args.out:
        if os.path.exists(args.out) and not args.force:
            raise UserError(f"{args.out} exists (another run's results); pass --force to replace it or another --out")
        return args.out
    stem = os.path.join(args.results_dir, dataset,
                        f"di-{os.path.splitext(os.path.basename(args.victim))[0]}-{args.feature}")
    return jsonio.first_free(stem)


def main(args):
    preset = cli.preset_of(args)
    dataset = preset["dataset"]
    d = DATASETS[dataset]
    device = cli.get_device(args.gpu)
    flags = dict(num_classes=d["num_classes"], in_channels=d["channels"], device=device)
    victim, record = load_model(args.victim, what="victim", **flags)
    sets, seed = di.victim_sets(preset, args.data_dir, args.victim, record, args.seed, fit=args.fit_images,
                                test=args.test_images, gamma=args.gamma)
    cli.seed_everything(seed)
    out = out_path(args, dataset)
    walk = {} if args.steps is None else dict(steps=args.steps)
    run = di.DatasetInference(victim, sets, dataset, feature=args.feature, norms=args.norms, scale=args.walk_scale,
                              walk=walk, m=args.m, alpha=args.alpha, seed=seed, device=device)
    print(f"victim {args.victim}: regressor fitted on {run.fit_record['images']} + {run.fit_record['images']} "
          f"images, {run.fit_record['queries']} queries, {run.fit_record['seconds']} s")
    suspects = []
    for path in args.suspects:
        model, _ = load_model(path, what="suspect", **flags)
        r = run(model, name=path)
        r["suspect"] = os.path.abspath(path)
        suspects.append(r)
        print(f"{path}: p {r['p_value']:.3g} (all {r['n']} images: {r['p_all']:.3g}) dmu {r['delta_mu']:+.3f} "
              f"detection {r['detection_rate']:.2f} of {r['draws']} draws, {r['queries']} queries "
              f"({r['queries_per_image']:.0f}/image), {r['seconds']} s: {r['verdict']}")
    result = dict(victim=os.path.abspath(args.victim), preset=preset["name"], dataset=dataset, seed=seed,
                  feature=args.feature, norms=run.norms, scale=run.scale, walk=run.walk,
                  sets={k: len(v) for k, v in sets.items() if k.endswith(("_fit", "_test"))},
                  public_split=sets["public_split"], fit=run.fit_record, suspects=suspects,
                  inference="fp32", models_trained=record.get("metrics", {}).get("amp"),
                  date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    jsonio.write(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    cli.run(main, get_parser())
