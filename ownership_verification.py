"""Ownership verification: is the suspect model stolen from the victim?

    python ownership_verification.py --mode=source --dataset=cifar10 --gpu=0
    python ownership_verification.py --mode=fine-tune --dataset=fmnist
    python ownership_verification.py --s=suspect.pt --dataset=fmnist

The suspect and the held-out benign references of its architecture (benign-<arch>-ref.pt, -ref2.pt ...
as reproduce.py trains them, or --b; black-box: those of every architecture, as the one black-box
meta-classifier blackbox-<dataset>.pt was trained on every architecture) are queried with the same m transformed (stylised) test images;
the meta-classifier gives P(stolen) for each. The default test (paired-all) runs the paper's one-sided
paired t-test of H0: mean(p_S - p_B) <= tau against every reference and reports the largest p: the
suspect must be more victim-like than each of them (docs/PROTOCOL.md). The test, m and tau come from
--preset (default: the dataset's own preset) unless --test, --m, --tau say otherwise.
Prints `result:  p-val: <p> mu: <delta mu>`, then one JSON line; writes the probabilities to
prob/<dataset>/<mode>[-blackbox].npz (an explicit --s: suspect-<file name>[-blackbox].npz) and never
replaces another suspect's file without --force.

A suspect behind a prediction API (no checkpoint, any architecture; docs/API.md):
    python ownership_verification.py --access black-box --export-queries queries/
    python ownership_verification.py --access black-box --predictions answers.jsonl
    python ownership_verification.py --access black-box --endpoint http://127.0.0.1:8000/ --suspect-name acme [--label-only]
It uses the per-dataset black-box meta-classifier (model/clf/blackbox-<dataset>.pt) and the held-out
references of every architecture (probabilities: prob/<dataset>/api-<suspect name>-blackbox.npz).

With --method both it also runs Dataset Inference's Blind Walk on the suspect checkpoint (the regressor fitted
on --victim) and prints the combined verdict, MOVE's p or DI's below alpha/2 (docs/DATASET_INFERENCE.md):
    python ownership_verification.py --s=suspect.pt --dataset=fmnist --access black-box --method both

Every verdict also writes its record (the JSON line, with `evidence`: checksums, commit, seeds,
protocol; docs/API.md) next to the probabilities, as <same name>.json; the API's answers go to
<same name>.answers.jsonl. To check a record offline:
    python ownership_verification.py --verify-record prob/fmnist/api-acme-blackbox.json
"""
import argparse
import hashlib
import os
import sys

import numpy as np

from network import MODELS
from ownership import answers as checks
from ownership import api, cli, evidence, jsonio, paths
from ownership import dataset_inference as di
from ownership.checkpoints import FirstOutputs, atomic_write, load_model
from ownership.constants import BLACK_BOX, COLUMNS, METHODS, MODES, TESTS
from ownership.data import load_styled
from ownership.errors import UserError
from ownership.plan import verdict_files
from ownership.presets import DATASETS
from ownership.verify import Protocol, Verifier


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--mode", default=None, choices=MODES,
                   help="which suspect to verify, by the reference naming (default: source, or the file given "
                        "with --s)")
    p.add_argument("--suspicious_model_root", "--s", dest="suspect", default=None, help="suspect checkpoint")
    p.add_argument("--model", choices=list(MODELS), default=None,
                   help="the suspect's architecture, needed when its file does not record it (a bare "
                        "state_dict, or a .safetensors file without 'arch' metadata)")
    p.add_argument("--benign_model_root", "--b", dest="benign", default=None, nargs="+",
                   help="benign reference checkpoint(s) (default: the held-out references benign-<arch>-ref.pt, "
                        "-ref2.pt ... that exist, else benign-<arch>.pt; black-box: those of every architecture, "
                        "see --black-box)")
    p.add_argument("--clf_root", "--c", dest="clf", default=None,
                   help="meta-classifier (default: model/clf/gradsign-<dataset>-<arch>.pt, or for --access black-box "
                        "blackbox-<dataset>.pt; see --black-box)")
    p.add_argument("--test", default=None, choices=list(TESTS),
                   help="paired-all: the paper's one-sided paired t-test against every reference, the largest p; "
                        "paper: against the first only; spread: the suspect's mean against the references' means "
                        "(needs 3 or more); reference: the reference code's protocol (m = 10) (default: the preset's)")
    p.add_argument("--m", type=int, default=None,
                   help="number of stylised images per test (default: the preset's for --access: fmnist white-box "
                        "100, black-box 50; cifar10 and imagenet 10)")
    p.add_argument("--tau", type=float, default=None,
                   help="margin of the paired tests (default: the preset's for --access: fmnist white-box 0.05, "
                        "black-box and baseline 0.1; cifar10 and imagenet 0)")
    p.add_argument("--alpha", type=float, default=None, help="significance level of the verdict (default: 0.01)")
    p.add_argument("--access", default="white-box", choices=COLUMNS,
                   help="white-box: the classifier's white-box feature (fmnist: the log-loss on each stylised image; "
                        "cifar10, imagenet: the paper's gradient signs); black-box: the suspect's predictions only (MOVE's "
                        "prediction shifts; fmnist: plus the probability of each image's true label); "
                        "baseline: no meta-classifier, the suspect's correctness on each stylised image")
    p.add_argument("--black-box", default=None, choices=BLACK_BOX,
                   help="black-box only: any-arch: the classifier over every architecture (blackbox-<dataset>.pt) and "
                        "the references of every architecture; per-arch: the suspect's architecture's classifier "
                        "(blackbox-<dataset>-<arch>.pt, made by 'python reproduce.py --black-box per-arch') and "
                        "references (default: the preset's, any-arch)")
    p.add_argument("--classes-subset", "--classes_subset", dest="classes_subset", default=None, choices=["first"],
                   help="black-box only: a suspect with more outputs than the dataset has classes (e.g. fine-tuned with "
                        "extra classes) is verified on its first <classes> outputs (softmax over those logits); "
                        "only if those are the dataset's classes in the dataset's order")
    p.add_argument("--index", type=int, default=1, help="which independent model for --mode independent")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--force", action="store_true", help="replace a probabilities file another suspect wrote")
    p.add_argument("--verify-record", metavar="FILE", default=None,
                   help="recompute the p-value of a verdict's record (its .json file) offline from the files it names, "
                        "checked against their sha256, and say whether it matches")
    p.add_argument("--method", default=None, choices=METHODS,
                   help="both: also Dataset Inference's Blind Walk on the suspect checkpoint (top-1 labels; the regressor "
                        "fitted on --victim, minutes on a CPU) and the combined verdict, MOVE's p or DI's below "
                        "alpha/2 (docs/DATASET_INFERENCE.md); not through an API (default: the preset's, move)")
    p.add_argument("--victim", default=None,
                   help="--method both: the victim checkpoint (default model/victim/vict-<the dataset's victim arch>.pt)")
    api.add_arguments(p)  # --export-queries, --predictions, --endpoint, --label-only ... (ownership/api.py)
    return cli.add_common(p, preset=True)


def protocol_of(args, preset):
    """The run's Protocol: the preset's (--preset, else the dataset's own: cli.preset_of) for the --access
    column (its margin tau), with the flags given."""
    extra = {} if args.alpha is None else dict(alpha=args.alpha)
    return Protocol.from_preset(preset, args.test, args.m, args.tau, column=args.access, **extra)


def resolve(args, preset, device="cpu"):
    """The suspect (path, model, checkpoint), its references and meta-classifier paths, from --mode and
    --dataset unless given. The suspect is loaded first: its architecture decides the rest."""
    d = DATASETS[args.dataset]
    suspect = args.suspect or paths.suspect_for_mode(args.model_dir, args.dataset, args.mode or "source", args.index)
    n = d["num_classes"]
    subset = args.classes_subset == "first"
    if subset and args.access != "black-box":
        raise UserError(f"--classes-subset first needs --access black-box: the white-box meta-classifier reads "
                        f"features of a {n}-output model, which a model with more outputs does not have")
    hint = (f"white-box verification needs the dataset's {n} outputs (the meta-classifier reads features of a model with "
            f"those outputs); if its first {n} outputs are the dataset's classes in order, verify its predictions with "
            f"--access black-box --classes-subset first" if args.access == "white-box" else
            f"if its first {n} outputs are the dataset's classes in order, pass --classes-subset first")
    model, ck = load_model(suspect, args.model, None if subset else n, d["channels"], device, "suspect model",
                           made_by=f"python reproduce.py --preset {d['preset']}", flags={"arch": "--model"},
                           classes_hint=hint)
    if subset:
        if ck["num_classes"] < n:
            raise UserError(f"{suspect} has {ck['num_classes']} outputs, fewer than the {n} classes of "
                            f"{args.dataset}; it cannot be verified on this dataset")
        if ck["num_classes"] > n:
            print(f"note: {suspect} has {ck['num_classes']} outputs; verifying on its first {n} "
                  f"(--classes-subset first)", file=sys.stderr)
            model = FirstOutputs(model, n)
    arch = ck.get("arch") or args.model
    clf, benign = column_files(args, preset, arch)
    benign = args.benign or benign or [paths.benign(args.model_dir, arch)]
    for b in benign:
        if os.path.abspath(b) == os.path.abspath(suspect):
            raise UserError(f"the suspect and a benign reference are the same file ({suspect}); the test "
                            f"would compare a model with itself. Pass other references with --b")
    return suspect, model, benign, clf if clf is None else args.clf or clf, arch


def column_files(args, preset, arch):
    """(meta-classifier or None, references on disk) of the --access column for a suspect of `arch`
    (None: behind an API), by the any-architecture rule of reproduce.py (ownership.plan.verdict_files)."""
    return verdict_files(args.access, arch, args.black_box or preset["black_box"],
                         lambda a: paths.clf(args.model_dir, args.dataset, a, args.access),
                         lambda a: paths.all_references(args.model_dir) if a is None else paths.references(args.model_dir, a))


def api_suspect(args, preset):
    """A suspect behind an API: (its name, the references of every architecture, the per-dataset
    black-box meta-classifier); the suspect's architecture is unknown, so neither may depend on it."""
    clf, benign = column_files(args, preset, None)
    benign = args.benign or benign
    if not benign:
        raise UserError(f"no held-out benign references (benign-<arch>-ref*.pt) in {args.model_dir}/benign; train "
                        f"them with 'python train_model.py --role benign --tag=-ref' or pass --b")
    return api.identity(args), benign, args.clf or clf


def prob_path(args, suspect):
    """Where this run's probabilities go: the mode's file, or one named from an explicit suspect (a
    file, a predictions file, or 'endpoint')."""
    if api.requested(args):
        name = "api-" + api.suspect_name(args)
    elif args.suspect:
        name = "suspect-" + os.path.basename(suspect)
    else:
        name = args.mode or "source"
    name += {"white-box": "", "black-box": "-blackbox", "baseline": "-baseline"}[args.access]
    return paths.prob(args.prob_dir, args.dataset, name + ("-labels" if args.label_only else ""))


def claim(path, suspect, force):
    """Refuse to replace a probabilities file that another suspect's run wrote (unless `force`);
    `suspect` is an absolute path or an endpoint URL."""
    if force or not os.path.exists(path):
        return
    try:
        previous = str(np.load(path)["suspect"])
    except Exception:
        previous = "an unrecorded suspect"
    if previous != suspect:
        raise UserError(f"{path} holds the results of {previous}; pass --force to replace them, or another "
                        f"--prob-dir")


def claim_answers(path, sha, force):
    """Refuse to replace the results of the same suspect name and URL whose answers were other ones
    (another model behind the URL), unless `force`."""
    if force or not os.path.exists(path):
        return
    try:
        previous = str(np.load(path)["answers_sha256"])
    except Exception:
        return
    if previous != sha:
        raise UserError(f"{path} holds the results of other answers of this suspect name and URL (another model?); "
                        f"pass another --suspect-name, or --force to replace them")


def queries_sha256(verifier):
    """sha256 of what every model was asked: the black-box queries, else the stylised images (uint8)."""
    x = verifier.queries if verifier.access == "black-box" else verifier.images.x
    return hashlib.sha256(x.numpy().tobytes()).hexdigest()


def verdict(args, device, check_claim=True):
    """The verification, writing nothing: (test record r, verdict record, verifier, probabilities path,
    the API's answers as received or None)."""
    through_api = api.requested(args)
    preset = cli.preset_of(args)
    protocol = protocol_of(args, preset)
    if through_api:
        suspect, benign, clf = api_suspect(args, preset)
        model, made_by = None, f"python train_clf.py --access black-box --dataset {args.dataset}"
    else:
        path, model, benign, clf, arch = resolve(args, preset, device)
        suspect = os.path.abspath(path)
        made_by = f"python train_clf.py --type={arch} --dataset={args.dataset} --access={args.access}"
    out = prob_path(args, suspect)
    if check_claim:
        claim(out, suspect, args.force)
    verifier = Verifier(clf, benign, load_styled(args.data_dir, args.dataset, args.gamma, "test"), args.dataset,
                        device, protocol, seed=args.seed, data_dir=args.data_dir, batch_size=args.batch_size,
                        made_by=made_by, label_only=args.label_only)
    source, rows, form = {}, None, {}
    if through_api:
        answers, form, source, rows = api.answers(args, verifier)
        reduce = checks.reducer(form)
        if reduce is not None:
            api.note_form(form, DATASETS[args.dataset]["num_classes"])
            verifier.reduce_like(reduce)
        r = verifier(answers=answers)
    else:
        r = verifier(model)
    record = {k: v for k, v in r.items() if k not in ("images", "p_suspect", "p_references", "answers")}
    record.update(mode=args.mode if (args.suspect or through_api) else (args.mode or "source"), suspect=suspect,
                  references=benign, clf=clf, protocol=protocol.record(), label_only=verifier.label_only,
                  answers_form=form, probabilities=out, **source)
    record["evidence"] = dict(queries_sha256=queries_sha256(verifier))
    return r, record, verifier, out, rows


def dataset_inference_verdict(args, preset, model, p_move, alpha, device):
    """--method both (docs/DATASET_INFERENCE.md): Dataset Inference's Blind Walk on the suspect `model`, its
    regressor fitted on the victim (--victim) with the sets of the victim's recorded seed (dataset_inference.
    victim_sets), and the combined verdict: stolen when MOVE's p (`p_move`) or DI's is below alpha / 2
    (Bonferroni), p = min(1, 2 min(p_move, p_di)). Returns (DI's record, the combined record)."""
    d = DATASETS[args.dataset]
    victim_path = args.victim or paths.victim(args.model_dir, d["victim_arch"])
    victim, ck = load_model(victim_path, None, d["num_classes"], d["channels"], device, "victim model")
    sets, seed = di.victim_sets(preset, args.data_dir, victim_path, ck, gamma=args.gamma)
    r = di.DatasetInference(victim, sets, args.dataset, alpha=alpha, seed=seed, device=device)(model)
    record = {k: r[k] for k in ("p_value", "delta_mu", "verdict", "m", "detection_rate", "draws", "p_all",
                                "delta_mu_all", "queries", "seconds")}
    record["victim"] = os.path.abspath(victim_path)
    return record, di.combined_verdict(p_move, r["p_value"], alpha)


def verify_record(args, device):
    """--verify-record FILE: rerun the record's verification on the files it names (checked against
    their sha256), offline, and compare the p-values (ownership/evidence.py)."""
    record, ev = evidence.load_record(args.verify_record)
    flags = ev.get("flags") or {}
    proto = ev["protocol"]
    a = argparse.Namespace(**vars(args))
    a.__dict__.update(dataset=ev["dataset"], seed=ev["seed"], gamma=ev["gamma"], access=ev["access"],
                      black_box=ev.get("black_box"), label_only=ev["label_only"], test=proto["test"], m=proto["m"],
                      tau=proto["tau"], alpha=proto["alpha"], preset=None, benign=[r["path"] for r in ev["references"]],
                      clf=ev["clf"]["path"] if ev.get("clf") else None, predictions=ev.get("answers_file"),
                      suspect=ev.get("suspect_file"), endpoint=None, export_queries=None, queries=None,
                      model=flags.get("model"), classes_subset=flags.get("classes_subset"), mode=flags.get("mode"),
                      suspect_name=None)
    _, again, _, _, _ = verdict(a, device, check_claim=False)
    summary = evidence.compare(args.verify_record, record, again)
    print(jsonio.dumps(summary))
    return summary


def main(args):
    cli.seed_everything(args.seed)
    device = cli.get_device(args.gpu)
    if args.verify_record:
        return verify_record(args, device)
    preset = cli.preset_of(args)  # --dataset and --gamma before any branch reads them (the export too)
    through_api = api.requested(args)
    method = args.method or preset["method"]
    if method == "both" and through_api:
        raise UserError("--method both runs Dataset Inference's Blind Walk, whose queries depend on the answers, so it "
                        "needs the suspect's checkpoint (--s); verify an API with --method move")
    if through_api:
        api.check_args(args)
        if args.export_queries:
            return api.export(args)
        args.access = "black-box"
    r, record, verifier, out, rows = verdict(args, device)
    answers_file = args.predictions
    if rows is not None:  # the endpoint's answers as received: the evidence that stands in for the API
        answers_file = os.path.splitext(out)[0] + ".answers.jsonl"
        text = evidence.answers_text(rows)
        claim_answers(out, hashlib.sha256(text.encode()).hexdigest(), args.force)
        evidence.write_text(answers_file, text)
    record["evidence"] = evidence.build(
        queries_sha256=record["evidence"]["queries_sha256"], references=record["references"], clf=record["clf"],
        seed=args.seed, dataset=args.dataset, gamma=args.gamma, access=args.access, black_box=args.black_box,
        label_only=record["label_only"], form=record["answers_form"], protocol=record["protocol"],
        answers_file=answers_file, suspect_file=None if through_api else record["suspect"],
        flags=dict(model=args.model, classes_subset=args.classes_subset, mode=args.mode))
    arrays = {k: r[k] for k in ("p_suspect", "p_references", "answers") if k in r}
    extra = {"answers_sha256": record["evidence"]["answers_sha256"]} if rows is not None else {}
    atomic_write(out, lambda tmp: np.savez(tmp, **arrays, image_index=verifier.images.idx.numpy(),
                                           suspect=record["suspect"], **extra))
    if method == "both":
        record["dataset_inference"], record["combined"] = dataset_inference_verdict(
            args, preset, resolve(args, preset, device)[1], r["p_value"], record["protocol"]["alpha"], device)
    evidence.write_record(os.path.splitext(out)[0] + ".json", record)
    print(f"result:  p-val: {r['p_value']} mu: {r['delta_mu']}")
    if method == "both":
        d, c = record["dataset_inference"], record["combined"]
        print(f"dataset inference:  p-val: {d['p_value']} mu: {d['delta_mu']} ({d['queries']} label queries); "
              f"combined (alpha/2 each): p-val: {c['p_value']} {c['verdict']}")
    print(jsonio.dumps(record))
    return record


if __name__ == "__main__":
    cli.run(main, get_parser())
