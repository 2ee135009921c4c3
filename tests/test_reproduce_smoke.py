"""The whole pipeline end to end on the smoke preset, through reproduce.py's command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import reproduce

from ownership.checkpoints import load_checkpoint
from ownership.constants import ACCESSES, BLACK_BOX_FEATURES, COLUMNS, SUSPECT_MODES
from ownership.presets import get_preset


@pytest.fixture(scope="module")
def smoke(repo, tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    cmd = [sys.executable, os.path.join(repo, "reproduce.py"), "--preset", "smoke", "--workdir", str(root / "work"),
           "--out", str(root / "results")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(root / "results" / "results.json") as f:
        return root, cmd, r, json.load(f)


def test_results_json(smoke):
    root, _, r, res = smoke
    assert res["preset"] == "smoke" and res["seed"] == 0
    modes = [row["mode"] for row in res["rows"]]
    assert modes[:len(SUSPECT_MODES)] == list(SUSPECT_MODES)
    assert modes.count("independent") >= 2
    for row in res["rows"]:
        assert set(row) == {"mode", "suspect", "arch", "clean_acc", "stylised_acc", "transfer_gap", *COLUMNS}
        assert 0 <= row["clean_acc"] <= 1 and 0 <= row["stylised_acc"] <= 1
    indep = [row["stylised_acc"] for row in res["rows"] if row["mode"] == "independent"][:len(get_preset("smoke")["independents"])]
    for row in res["rows"]:  # the transfer gap: against the preset's independent models' mean
        assert row["transfer_gap"] == pytest.approx(row["stylised_acc"] - sum(indep) / len(indep), abs=1e-12)
        for access in COLUMNS:
            assert set(row[access]) == {"p_value", "delta_mu", "verdict"}
            assert 0 <= row[access]["p_value"] <= 1 and -1 <= row[access]["delta_mu"] <= 1
            assert row[access]["verdict"] in ("stolen", "not stolen")
    probs = reproduce.load_probs(root / "results")
    for i, row in enumerate(res["rows"]):  # the baseline's "P(stolen)" is correctness: its mean, the accuracy
        assert probs["baseline"][0][i].mean() == pytest.approx(row["stylised_acc"], abs=1e-6)  # a float32 mean
        assert set(np.unique(probs["baseline"][1][i])) <= {0.0, 1.0}
    for stage in ("embed", "train", "steal", "gradients", "clf", "verify"):
        assert stage in res["timings"]
    for f in ("results.md", "results.png", "results-probs.png"):
        assert os.path.getsize(root / "results" / f) > 0
    assert "| source |" in r.stdout  # the table is printed
    assert "training in bf16" in r.stdout or "training in fp32" in r.stdout  # the float path, said at the start


def test_each_column_uses_its_margin(smoke):
    """The smoke preset (fmnist's protocol) gives the white-box column its own m and margin: each recorded p
    is the test of the saved probabilities with that column's m and tau, and the black-box ones would
    change it."""
    from ownership.presets import PRESETS
    from ownership.verify import Protocol, per_column, test
    root, res = smoke[0], smoke[3]
    assert res["protocol"]["tau"] == PRESETS["smoke"]["tau"] == {"white-box": 0.05, "black-box": 0.1, "baseline": 0.1}
    assert res["protocol"]["m"] == PRESETS["smoke"]["m"] == {"white-box": 100, "black-box": 50, "baseline": 50}
    probs = reproduce.load_probs(root / "results")
    for access in COLUMNS:
        protocol = Protocol("paired-all", per_column(res["protocol"]["m"], access),
                            per_column(res["protocol"]["tau"], access), 0.01)
        for i, row in enumerate(res["rows"]):
            assert test(probs[access][0][i], probs[access][1][i], protocol, seed=0)["p_value"] == \
                pytest.approx(row[access]["p_value"], rel=1e-9, abs=1e-300), (access, row["mode"])
    white = Protocol("paired-all", per_column(res["protocol"]["m"], "white-box"),
                     per_column(res["protocol"]["tau"], "white-box"), 0.01)
    for other in (Protocol("paired-all", 50, white.tau, 0.01), Protocol("paired-all", white.m, 0.1, 0.01)):
        # the t statistic, not p: on the smoke models p may be 1.0 either way
        ts = [tuple(test(probs["white-box"][0][i], probs["white-box"][1][i], protocol, seed=0)["t"]
                    for protocol in (white, other)) for i in range(len(res["rows"]))]
        # the white-box column's own m, and its own margin, mattered
        assert any(a != b for a, b in ts if np.isfinite(a) and np.isfinite(b)), other


def test_reference_is_held_out(smoke):
    root, res = smoke[0], smoke[3]
    assert res["protocol"]["name"] == "ours" and res["protocol"]["test"] == "paired-all"
    assert res["black_box"] == "any-arch"  # the preset's: one black-box classifier over both architectures
    classifiers = [(k, c) for by_access in res["classifiers"].values() for k, c in by_access.items()]
    for name, c in classifiers:
        archs = 2 if name == "black-box" else 1
        assert c["path"] == ("model/clf/blackbox-fmnist.pt" if name == "black-box" else c["path"])
        assert c["references"][0].endswith("-ref.pt") and len(c["references"]) == 4 * archs
        trained = c["trained_on"]["pos"] + c["trained_on"]["neg"]
        assert len(c["trained_on"]["pos"]) >= 2 * archs and len(c["trained_on"]["neg"]) >= 4 * archs
        weak = [t for t in c["trained_on"]["neg"] if "-weak" in os.path.basename(t)]
        n_weak = len(get_preset("smoke")["clf_models"]["weak"]) * archs  # black-box only
        assert len(weak) == (n_weak if name == "black-box" else 0), (name, c["trained_on"]["neg"])
        for w in weak:  # benign-<arch>-weak<k>.pt: the k-th entry n of the preset's list; n = 0: untrained
            n = get_preset("smoke")["clf_models"]["weak"][int(w.rsplit("-weak", 1)[1][:-3]) - 1]
            ck = torch.load(root / "work" / w, weights_only=True)
            assert ck["train"]["epochs"] == (1 if n else 0), (w, ck["train"])
        # black-box only: the defender's simulated thefts, students of the victim as positives and of a
        # benign model as negatives, one per simulated attack and student architecture
        n_thefts = len(get_preset("smoke")["clf_models"]["thefts"]) * archs
        for label, teacher in (("pos", "vict-"), ("neg", "benign-")):
            stolen = [t for t in c["trained_on"][label] if t.startswith("model/theft/")]
            assert len(stolen) == (n_thefts if name == "black-box" else 0), (name, c["trained_on"][label])
            assert all(os.path.basename(t).startswith(teacher) for t in stolen), stolen
        for ref in c["references"] + trained:  # every path relative to the work folder
            assert not os.path.isabs(ref) and os.path.exists(root / "work" / ref), ref
        for ref in c["references"]:
            assert ref not in trained, (name, ref)


def test_simulated_thefts_are_not_the_attacks(smoke):
    """The defender's simulated distillation of its victim has the attack's teacher, data and student
    architecture, but a seed of its own (steal.py --tag): its weights must differ from the attacker's
    student, else the classifier would have been trained on the very suspect it judges. The simulated
    multi-stage student fine-tunes the simulated distillation one, on the defender's clean data."""
    model = smoke[0] / "work" / "model"
    theft = torch.load(model / "theft" / "vict-wrn16-1-d-wrn10-1.pt", weights_only=True)
    attack = torch.load(model / "attack" / "atta-d-wrn10-1.pt", weights_only=True)
    assert theft["arch"] == attack["arch"] == "wrn10-1"
    assert theft["init_seed"] != attack["init_seed"]
    assert not torch.equal(theft["state_dict"]["conv1.weight"], attack["state_dict"]["conv1.weight"])
    second = torch.load(model / "theft" / "vict-wrn16-1-dft-wrn10-1.pt", weights_only=True)
    assert second["mode"] == "multi-stage" and second["arch"] == "wrn10-1"
    assert not torch.equal(second["state_dict"]["conv1.weight"], theft["state_dict"]["conv1.weight"])


def test_independent_models_not_flagged(smoke):
    # loose threshold: the smoke models are tiny, but an independent model must not look stolen to the
    # white-box test (the preset's stylised log-loss). The black-box verdicts are not asserted here: the smoke models
    # reach only 11-46 % clean accuracy, so their prediction shifts are noise (one independent model
    # got p = 8e-6 in a smoke run); README shows the black-box verdicts on the fmnist preset.
    rows = [r for r in smoke[3]["rows"] if r["mode"] == "independent"]
    assert len(rows) >= 2
    for row in rows:
        assert row["white-box"]["p_value"] > 1e-3, row


def test_rerun_skips_finished_stages(smoke):
    root, cmd, _, res = smoke
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(root / "results" / "results.json") as f:
        again = json.load(f)
    assert set(again["timings"]) == {"verify", "total"}  # nothing retrained
    assert again["rows"] == res["rows"]


@pytest.mark.slow  # retrains a student
def test_corrupted_checkpoint_redoes_its_stage(smoke):
    """Corrupt one finished stage's output (the label-query student): the rerun sees its checksum
    differ from the manifest's, redoes that stage only, and gets the same weights and results."""
    import torch
    root, cmd, _, res = smoke
    path = root / "work" / "model" / "attack" / "atta-label-wrn10-1.pt"
    manifest = root / "results" / "manifest.json"
    recorded = json.loads(manifest.read_text())[str(path)]
    run = recorded["settings"]["run"]
    assert recorded["outputs"] == {str(path): _sha256(path)} and run[run.index("--seed") + 1] == "0"
    weights = torch.load(path, weights_only=True)["state_dict"]
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b"corrupt")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "atta-label-wrn10-1.pt changed since steal made it" in r.stdout
    again = json.loads((root / "results" / "results.json").read_text())
    assert set(again["timings"]) == {"steal", "verify", "total"}
    redone = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], redone[k]) for k in weights)
    assert again["rows"] == res["rows"]


def _sha256(path):
    import hashlib
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.slow  # a second smoke run from nothing (the test: 103 s at commit c826b7a, docs/BENCHMARKS.md)
def test_killed_run_resumes_to_identical_results(smoke, tmp_path):
    """Kill reproduce.py part-way (SIGKILL, after a few stages), rerun it: the results are
    bit-identical to the uninterrupted run's - which also shows that the same seed gives the same
    numbers in another process."""
    import signal
    import time
    _, cmd, _, res = smoke
    cmd = cmd[:cmd.index("--workdir")] + ["--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "results")]
    manifest = tmp_path / "results" / "manifest.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(json.loads(manifest.read_text() or "{}")) >= 4:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    time.sleep(1.0)  # land inside a stage
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((tmp_path / "results" / "results.json").read_text())
    assert "embed" not in again["timings"]  # finished stages were not redone
    strip = lambda rows: [{k: v for k, v in x.items() if k != "suspect"} for x in rows]  # noqa: E731
    assert strip(again["rows"]) == strip(res["rows"])


def _rerun(smoke, out, *flags):
    """reproduce.py again on the smoke artefacts with other flags, into `out` (its manifest copied, so
    finished stages are skipped); returns its results.json."""
    import shutil
    root, cmd, _, _ = smoke
    os.makedirs(out, exist_ok=True)
    shutil.copy(root / "results" / "manifest.json", out / "manifest.json")
    cmd = cmd[:cmd.index("--out")] + ["--out", str(out), *flags]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


def _script_p_values(smoke, tmp_path, res, *flags):
    """ownership_verification.py on the same artefacts for the fine-tuned model (by --mode) and the
    first independent model (by --s), both accesses: {(mode, access): p}."""
    import ownership_verification as ov
    root = smoke[0]
    work = root / "work"
    dirs = ["--dataset=fmnist", f"--data-dir={work / 'data'}", f"--model-dir={work / 'model'}",
            f"--prob-dir={tmp_path / 'prob'}"]
    out = {}
    for row in (next(r for r in res["rows"] if r["mode"] == m) for m in ("fine-tune", "independent")):
        which = ["--mode=fine-tune"] if row["mode"] == "fine-tune" else [f"--s={work / row['suspect']}"]
        for access in COLUMNS:
            extra = list(flags)
            if "--protocol=reference" in extra:  # the benign model and classifier that protocol uses
                extra = ["--test=reference", f"--b={work / 'model' / 'benign' / ('benign-' + row['arch'] + '.pt')}"]
                if access in ACCESSES:
                    extra.append(f"--c={work / res['classifiers'][row['arch']][access]['path']}")
            args = ov.get_parser().parse_args(which + [f"--access={access}", *dirs, *extra])
            out[row["mode"], access] = ov.main(args)["p_value"]
    return out


@pytest.mark.parametrize("test_name", ["paired-all", pytest.param("paper", marks=pytest.mark.slow),
                                       pytest.param("spread", marks=pytest.mark.slow)])  # each reruns verification
def test_script_and_reproduce_give_the_same_p_values(smoke, tmp_path, test_name):
    """One verification path: ownership_verification.py gives reproduce.py's p-values, to the bit."""
    res = smoke[3] if test_name == "paired-all" else _rerun(smoke, tmp_path / "results", f"--test={test_name}")
    assert res["protocol"]["test"] == test_name
    got = _script_p_values(smoke, tmp_path, res, f"--test={test_name}")
    for (mode, access), p in got.items():
        row = next(r for r in res["rows"] if r["mode"] == mode)
        assert p == row[access]["p_value"], (test_name, mode, access)


@pytest.mark.slow
def test_script_and_reproduce_agree_under_the_reference_protocol(smoke, tmp_path):
    """--protocol reference: its own classifiers, the benign model they saw as reference, m = 10."""
    res = _rerun(smoke, tmp_path / "results", "--protocol", "reference")
    assert res["protocol"]["name"] == "reference" and res["protocol"]["m"] == 10 and res["protocol"]["tau"] is None
    got = _script_p_values(smoke, tmp_path, res, "--protocol=reference")
    for (mode, access), p in got.items():
        row = next(r for r in res["rows"] if r["mode"] == mode)
        assert p == row[access]["p_value"], (mode, access)


def test_multi_stage_mode_of_the_verification_script(smoke, tmp_path):
    import ownership_verification as ov
    work = smoke[0] / "work"
    r = ov.main(ov.get_parser().parse_args(["--mode", "multi-stage", "--dataset", "fmnist", "--data-dir",
                                            str(work / "data"), "--model-dir", str(work / "model"),
                                            "--prob-dir", str(tmp_path)]))
    row = next(x for x in smoke[3]["rows"] if x["mode"] == "multi-stage")
    assert r["suspect"].endswith("atta-dft-wrn10-1.pt") and r["p_value"] == row["white-box"]["p_value"]
    assert os.path.exists(tmp_path / "fmnist" / "multi-stage.npz")


def test_evaluate_aggregates_saved_seeds(smoke, tmp_path):
    """evaluate.py --aggregate-only on a finished seed: rates per access and mode, the m sweep and the
    (m, tau) grid from the saved probabilities, written as strict JSON."""
    import evaluate
    from ownership import cli
    from ownership.training import amp_name
    fp = amp_name(cli.get_device(None), "auto")  # the device evaluate.py runs on: a GPU box's CUDA too
    seed_dir = tmp_path / f"seeds-{fp}" / "0"
    seed_dir.mkdir(parents=True)
    os.symlink(smoke[0] / "results", seed_dir / "results")
    for folder in ("data", "model"):  # the untrained models are verified with the seed's classifiers
        os.symlink(smoke[0] / "work" / folder, seed_dir / folder)
    r = evaluate.main(evaluate.get_parser().parse_args(
        ["--preset", "smoke", "--seeds", "1", "--aggregate-only", "--out", str(tmp_path), "--max-m", "20",
         "--grid-m", "10", "50", "--grid-tau", "0", "0.1", "--untrained", "2"]))
    assert set(r["rows"]) == set(COLUMNS) and r["float_path"] == fp and r["protocol"]["m"]["black-box"] == 50
    rows = {row["mode"]: row for row in smoke[3]["rows"]}
    probs_of_seed = reproduce.load_probs(smoke[0] / "results")
    rows_index = {arch: next(k for k, row in enumerate(smoke[3]["rows"]) if row["arch"] == arch)
                  for arch in ("wrn16-1", "wrn10-1")}
    for access in COLUMNS:
        src = r["rows"][access]["source"]
        assert src["n"] == 1 and src["detected"] == float(rows["source"][access]["p_value"] < 0.01)
        assert len(src["median_curve"]) == 19 and [(g["m"], g["tau"]) for g in src["grid"]] == \
            [(10, 0.0), (10, 0.1), (50, 0.0), (50, 0.1)]
        assert r["rows"][access]["independent"]["n"] == 2
        for arch in ("wrn16-1", "wrn10-1"):
            q = r["classifiers"][access][arch]
            means = probs_of_seed[access][1][rows_index[arch]].mean(1)
            assert q["reference_spread"] == [pytest.approx(means.max() - means.min())]
            assert (q["model_auc"][0] is None) == (access == "baseline")
    for access in COLUMNS:  # 2 freshly initialised models per architecture, verified in every column
        for arch in ("wrn16-1", "wrn10-1"):
            u = r["untrained"][access][arch]
            assert u["n"] == 2 and u["flagged"] == sum(p < 0.01 for p in u["p_values"])
            assert u["min_p"] == min(u["p_values"]) and all(0 <= p <= 1 for p in u["p_values"])
    text = (tmp_path / f"validity-{fp}-seeds0-0.json").read_text()  # named by its seeds: never overwritten
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))["seeds"] == [0]
    md = (tmp_path / f"validity-{fp}-seeds0-0.md").read_text()
    assert md.startswith("# Validity on preset `smoke`") and "Untrained (freshly initialised) models" in md


@pytest.mark.slow  # Dataset Inference on every suspect (20 + 20 images per side)
def test_dataset_inference_columns(smoke, tmp_path):
    """--method both on the smoke artefacts: only DI's job runs; every row gets the di column, with the
    labels it asked, and the combined verdict by its rule (MOVE black-box or DI below alpha / 2); MOVE's
    columns do not change."""
    res = _rerun(smoke, tmp_path / "results", "--method", "both")
    assert res["method"] == "both" and set(res["timings"]) == {"di", "verify", "total"}
    alpha = res["protocol"]["alpha"]
    for row, before in zip(res["rows"], smoke[3]["rows"]):
        di, bb = row["di"], row["black-box"]
        assert 0 <= di["p_value"] <= 1 and di["queries"] > 0 and di["verdict"] in ("stolen", "not stolen")
        assert (row["combined"]["verdict"] == "stolen") == (min(bb["p_value"], di["p_value"]) < alpha / 2), row["mode"]
        assert all(row[c] == before[c] for c in COLUMNS)
    md = (tmp_path / "results" / "results.md").read_text()
    assert " di p | Δμ | verdict | combined p | Δμ | verdict |" in md
    import ownership_verification as ov  # one suspect: the same DI test, the same numbers
    work = smoke[0] / "work"
    indep = next(r for r in res["rows"] if r["mode"] == "independent")
    rec = ov.main(ov.get_parser().parse_args(
        [f"--s={work / indep['suspect']}", "--access=black-box", "--preset=smoke", "--method=both",
         f"--data-dir={work / 'data'}", f"--model-dir={work / 'model'}", f"--prob-dir={tmp_path / 'prob'}"]))
    assert rec["p_value"] == indep["black-box"]["p_value"]
    assert rec["dataset_inference"]["p_value"] == indep["di"]["p_value"]
    assert rec["combined"]["verdict"] == indep["combined"]["verdict"]
    assert rec["combined"]["p_value"] == indep["combined"]["p_value"]


@pytest.mark.slow  # trains the black-box classifier on top labels and reruns the verification
def test_label_only_run_trains_its_own_black_box_classifier(smoke, tmp_path):
    """--label-only: one new job, the black-box classifier on the models' top labels; the black-box column
    reads it from labels only, the white-box and baseline columns are those of the full run."""
    res = _rerun(smoke, tmp_path / "results", "--label-only")
    assert res["label_only"] and set(res["timings"]) == {"clf", "verify", "total"}
    bb = res["classifiers"]["wrn10-1"]["black-box"]
    assert bb["path"] == "model/clf/blackbox-fmnist-labels.pt" and bb["model_level"]["auc"] is not None
    assert torch.load(smoke[0] / "work" / bb["path"], weights_only=True)["label_only"] is True
    for row, before in zip(res["rows"], smoke[3]["rows"]):
        assert row["white-box"] == before["white-box"] and row["baseline"] == before["baseline"]


@pytest.mark.slow  # reruns the verification stage
def test_rounded_answers_change_only_the_black_box_column(smoke, tmp_path):
    """--decimals 1: the black-box column is verified on answers rounded to one decimal (suspects and
    references alike), recorded in results.json; the white-box and baseline columns are those of full answers."""
    res = _rerun(smoke, tmp_path / "results", "--decimals", "1")
    assert res["answers"] == dict(decimals=1, top_k=None) and set(res["timings"]) == {"verify", "total"}
    changed = 0
    for row, before in zip(res["rows"], smoke[3]["rows"]):
        assert row["white-box"] == before["white-box"] and row["baseline"] == before["baseline"]
        changed += row["black-box"]["p_value"] != before["black-box"]["p_value"]
    assert changed > 0


@pytest.mark.slow  # trains two classifiers and reruns the verification stage
def test_per_architecture_black_box_column(smoke, tmp_path):
    """--black-box per-arch: one black-box classifier per architecture is trained (no model is), and
    each suspect's black-box column uses its architecture's classifier and references; the other
    columns do not change."""
    res = _rerun(smoke, tmp_path / "results", "--black-box", "per-arch")
    assert res["black_box"] == "per-arch" and set(res["timings"]) == {"clf", "verify", "total"}
    for arch, by_access in res["classifiers"].items():
        assert by_access["black-box"]["path"] == f"model/clf/blackbox-fmnist-{arch}.pt"
        assert len(by_access["black-box"]["references"]) == 4 and len(by_access["white-box"]["references"]) == 4
    for a, b in zip(res["rows"], smoke[3]["rows"]):
        assert a["white-box"] == b["white-box"] and a["baseline"] == b["baseline"]


@pytest.mark.slow  # trains one classifier and reruns the verification stage
def test_black_box_feature_variant(smoke, tmp_path):
    """--black-box-feature other than the preset's: its own any-architecture classifier, trained on one
    more column (the probability of the original's true label), no model retrained; the other columns do not change."""
    other = next(f for f in BLACK_BOX_FEATURES if f != smoke[3]["black_box_feature"])
    res = _rerun(smoke, tmp_path / "results", "--black-box-feature", other)
    assert res["black_box_feature"] == other and set(res["timings"]) == {"clf", "verify", "total"}
    path = f"model/clf/blackbox-fmnist-{other}.pt"
    assert {by_access["black-box"]["path"] for by_access in res["classifiers"].values()} == {path}
    ck = load_checkpoint(str(smoke[0] / "work" / path))
    d = {"prediction-shift": 40, "shift-true-label": 41}
    assert ck["feature"] == other and ck["d"] == d[other]
    assert load_checkpoint(str(smoke[0] / "work" / "model/clf/blackbox-fmnist.pt"))["d"] == d[smoke[3]["black_box_feature"]]
    for a, b in zip(res["rows"], smoke[3]["rows"]):
        assert a["white-box"] == b["white-box"] and a["baseline"] == b["baseline"]


@pytest.mark.parametrize("access", ["white-box", "black-box"])
def test_reference_commands_make_reproduce_s_classifiers(smoke, tmp_path, access):
    """README's reference commands, `python gradientset.py --m=<model>` and `python train_clf.py
    --type=wrn16-1` (black-box: `--access black-box`, every architecture), with the run's --preset and
    folders and nothing else: the same gradient set bytes, the same classifier settings and weights
    as reproduce.py's (one hand-off of the preset, cli.preset_of; no stage default of its own)."""
    import gradientset
    import train_clf
    work = smoke[0] / "work"
    dirs = ["--preset", "smoke", f"--data-dir={work / 'data'}", f"--model-dir={work / 'model'}",
            f"--grad-dir={work / 'gradients_set'}"]
    theirs = load_checkpoint(str(work / smoke[3]["classifiers"]["wrn16-1"][access]["path"]))
    if access == "white-box":
        victim = work / "model" / "victim" / "vict-wrn16-1.pt"
        got = gradientset.main(gradientset.get_parser().parse_args(
            ["--model=wrn16-1", f"--m={victim}", f"--gradientset_path={tmp_path / 'g.npy'}", *dirs]))
        want = work / "gradients_set" / "vict-wrn16-1.pt" / "fmnist_seurat_10%" / "g_l.npy"
        assert open(got, "rb").read() == open(want, "rb").read()
    flags = ["--type=wrn16-1"] if access == "white-box" else ["--access", "black-box"]
    mine = train_clf.main(train_clf.get_parser().parse_args(flags + [f"--out={tmp_path / 'clf.pt'}", *dirs]))
    for key in ("d", "hidden", "feature", "augment", "kind", "n_train", "sources"):
        assert mine[key] == theirs[key], key
    assert theirs["state_dict"].keys() == mine["state_dict"].keys()
    assert all(torch.equal(theirs["state_dict"][k], mine["state_dict"][k]) for k in theirs["state_dict"])
