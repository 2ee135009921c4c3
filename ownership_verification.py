"""Ownership verification: is the suspect model stolen from the victim?

    python ownership_verification.py --mode=source --dataset=cifar10 --gpu=0
    python ownership_verification.py --mode=fine-tune --dataset=fmnist
    python ownership_verification.py --s=suspect.pt --dataset=fmnist

The suspect and the held-out benign references of the same architecture (benign-<arch>-ref.pt, -ref2.pt
... as reproduce.py trains them, or --b) are queried with the same m transformed (stylised) test images;
the meta-classifier gives P(stolen) for each. The default test runs the paper's one-sided paired t-test
of H0: mean(p_S - p_B) <= tau against every reference and reports the largest p: the suspect must be
more victim-like than each of them (docs/VALIDITY.md). --test paper uses the first reference only;
--test reference runs the reference code's protocol (40 draws of 10, two-sided Welch, harmonic mean of p).
Prints `result:  p-val: <p> mu: <delta mu>`, then one JSON line; writes prob/<dataset>/<mode>.npz.

A suspect behind a prediction API (no checkpoint, any architecture; docs/API.md):
    python ownership_verification.py --access black-box --export-queries queries/
    python ownership_verification.py --access black-box --predictions answers.jsonl
    python ownership_verification.py --access black-box --endpoint http://127.0.0.1:8000/ [--label-only]
"""
import json
import os

import numpy as np

from network import MODELS
from ownership import api, blackbox, cli, paths, verify
from ownership.checkpoints import atomic_write, load_checkpoint, load_model
from ownership.data import load_styled
from ownership.presets import DATASETS, MODES, PRESETS


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--mode", default="source", choices=MODES,
                   help="which suspect to verify (its default path follows the reference naming)")
    p.add_argument("--suspicious_model_root", "--s", dest="suspect", default=None, help="suspect checkpoint")
    p.add_argument("--model", choices=list(MODELS), default=None,
                   help="the suspect's architecture, needed when its file does not record it (a bare "
                        "state_dict, or a .safetensors file without 'arch' metadata)")
    p.add_argument("--benign_model_root", "--b", dest="benign", default=None, nargs="+",
                   help="benign reference checkpoint(s) (default: the held-out references benign-<arch>-ref.pt, "
                        "-ref2.pt ... that exist, else benign-<arch>.pt)")
    p.add_argument("--clf_root", "--c", dest="clf", default=None,
                   help="meta-classifier (default: model/clf/gradsign-<dataset>-<arch>.pt)")
    p.add_argument("--m", type=int, default=None,
                   help="number of transformed images queried (default: the dataset's preset, fmnist 50, cifar10 and "
                        "imagenet 10; 10 for --test reference)")
    p.add_argument("--tau", type=float, default=None,
                   help="margin of the paired test (default: the dataset's preset, fmnist 0.1, cifar10 and imagenet 0)")
    p.add_argument("--alpha", type=float, default=verify.ALPHA, help="significance level of the verdict")
    p.add_argument("--test", default="paired-all", choices=list(verify.TESTS),
                   help="paired-all (default): the paper's one-sided paired t-test against every reference, the "
                        "largest p (with one reference it is the paper's test); paper: against the first only; spread: the suspect's mean against the references' "
                        "means (needs 3 or more); reference: the reference code's protocol")
    p.add_argument("--access", default="white-box", choices=["white-box", "black-box"],
                   help="white-box: gradient signs (the paper); black-box: the suspect's predictions only (MOVE)")
    p.add_argument("--index", type=int, default=1, help="which independent model for --mode independent")
    p.add_argument("--batch_size", type=int, default=128)
    api.add_arguments(p)  # issue 16: --export-queries, --predictions, --endpoint (ownership/api.py)
    return cli.add_common(p)


def resolve(args, device="cpu"):
    """The suspect model, loaded first (its architecture decides the rest), and the reference and
    classifier paths, from --mode and --dataset unless given."""
    d = DATASETS[args.dataset]
    suspect = args.suspect or paths.suspect_for_mode(args.model_dir, args.dataset, args.mode, args.index)
    model, ck = load_model(suspect, args.model, d["num_classes"], d["channels"], device, "suspect model",
                           made_by="python reproduce.py")
    arch = ck.get("arch") or args.model
    benign = args.benign or paths.references(args.model_dir, arch) or [paths.benign(args.model_dir, arch)]
    for b in benign:
        if os.path.abspath(b) == os.path.abspath(suspect):
            raise cli.UserError(f"the suspect and a benign reference are the same file ({suspect}); the test "
                                f"would compare a model with itself. Pass other references with --b")
    clf = args.clf or paths.clf(args.model_dir, args.dataset, arch, args.access)
    return suspect, model, benign, clf, arch


def test_defaults(args):
    """m and tau: given, else the dataset's preset (the reference protocol: m = 10, its own)."""
    preset = PRESETS[args.dataset]
    m = args.m if args.m is not None else (10 if args.test == "reference" else preset["m"])
    tau = preset["tau"] if args.tau is None else args.tau
    return m, tau


def main(args):
    if api.requested(args):  # issue 16: a suspect behind a prediction API, no checkpoint (docs/API.md)
        return api.run(args, test_defaults)
    cli.seed_everything(args.seed)
    device = cli.get_device(args.gpu)
    d = DATASETS[args.dataset]
    suspect, suspect_model, benign, clf_path, arch = resolve(args, device)
    clf = load_checkpoint(clf_path, "meta-classifier",
                          made_by=f"python train_clf.py --type={arch} --dataset={args.dataset} --access={args.access}")
    images = load_styled(args.data_dir, args.dataset, args.gamma, "test")
    clean_x = blackbox.originals(images, args.dataset, args.data_dir, "test") if clf.get("kind") == "black-box" else None
    p_s = verify.probabilities(suspect_model, clf, images, args.dataset, device, args.batch_size, args.seed, clean_x)
    p_b = [verify.probabilities(load_model(b, None, d["num_classes"], d["channels"], device, "reference model")[0],
                                clf, images, args.dataset, device, args.batch_size, args.seed, clean_x) for b in benign]
    m, tau = test_defaults(args)
    r = verify.test(p_s, p_b, m, tau, args.test, args.seed, args.alpha)
    out = paths.prob(args.prob_dir, args.dataset, args.mode)
    atomic_write(out, lambda tmp: np.savez(tmp, p_suspect=p_s, p_reference=p_b[0], p_references=np.stack(p_b),
                                           image_index=images.idx.numpy()))
    print(f"result:  p-val: {r['p_value']} mu: {r['delta_mu']}")
    r.update(mode=args.mode, suspect=suspect, reference=benign[0], references=benign, clf=clf_path, probabilities=out)
    print(json.dumps({k: v for k, v in r.items() if k != "images"}))
    return r


if __name__ == "__main__":
    cli.run(main, get_parser())
