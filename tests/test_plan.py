"""ownership/plan.py: reproduce.py's jobs as data, and a manifest that reruns a job only when what it
reads changes. Fake outputs (no training): every job of the smoke plan recorded as done, then the
preset changed one key at a time."""
import copy
import os

import pytest

import reproduce
from ownership import paths
from ownership.manifest import Stages, Task
from ownership.plan import Plan
from ownership.presets import get_preset


def args_of(tmp_path, *flags):
    return reproduce.get_parser().parse_args(["--preset", "smoke", "--workdir", str(tmp_path / "work"),
                                              "--out", str(tmp_path / "results"), *flags])


def tasks(plan):
    return [Task(j.stage, j.output, j.script, plan.argv(j), j.inputs, plan.settings(j)) for j in plan.jobs]


@pytest.fixture
def done(tmp_path):
    """The smoke plan with every job's output faked and recorded as done: (args, manifest path)."""
    args = args_of(tmp_path)
    plan = Plan(get_preset("smoke"), args)
    st = Stages(os.path.join(plan.out, "manifest.json"))
    for task in tasks(plan):
        if task.stage == "embed":
            os.makedirs(os.path.join(task.outputs, "train"))
            open(os.path.join(task.outputs, "index.json"), "w").write("{}")
        else:
            os.makedirs(os.path.dirname(task.outputs), exist_ok=True)
            open(task.outputs, "w").write(task.outputs)
        st._finish(st.pending(task))
    return args, st.path


def pending(args, manifest, preset):
    plan = Plan(preset, args)
    return {plan.relative(t.outputs): why for t, why in Stages(manifest).status(tasks(plan)) if why}


def test_the_plan_lists_each_job_after_its_inputs(tmp_path):
    plan = Plan(get_preset("smoke"), args_of(tmp_path))
    made = set()
    for job in plan.jobs:
        assert all(i in made or not i.startswith(plan.workdir) or i == plan.styled for i in job.inputs), job.output
        made.add(job.output)
    assert plan.jobs[0].stage == "embed" and plan.jobs[1].output == paths.victim(plan.model_dir, "wrn16-1")
    assert len(made) == len(plan.jobs)  # one job per output
    assert [m for m, _, _ in plan.suspects] == ["source", "distillation", "zero-shot", "fine-tune", "label-query",
                                                "logit-query", "multi-stage", "label-query (natural)",
                                                "logit-query (natural)", "independent", "independent"]
    # the any-architecture rule: one black-box classifier and every architecture's references for both
    clf, refs = plan.columns["wrn16-1", "black-box"]
    assert plan.columns["wrn10-1", "black-box"] == (clf, refs) and clf.endswith("blackbox-fmnist.pt")
    assert refs == [paths.benign(plan.model_dir, a, paths.reference_tag(k)) for a in ("wrn10-1", "wrn16-1")
                    for k in range(1, 5)]  # paths.all_references' order: architectures by name


def test_a_verification_key_retrains_nothing(done):
    args, manifest = done
    assert pending(args, manifest, get_preset("smoke")) == {}
    preset = get_preset("smoke")
    preset.update(m=20, tau=0.2, test="spread")  # read by the verification only
    assert pending(args, manifest, preset) == {}
    preset["black_box"] = "per-arch"  # two more classifiers; nothing done is redone
    assert set(pending(args, manifest, preset)) == {"model/clf/blackbox-fmnist-wrn16-1.pt",
                                                    "model/clf/blackbox-fmnist-wrn10-1.pt"}


def test_a_key_reruns_only_the_jobs_that_read_it(done):
    args, manifest = done
    preset = get_preset("smoke")
    preset["clf_models"]["weak"] = [256, 1024, 0]  # the second weak model's budget
    got = pending(args, manifest, preset)
    assert set(got) == {"model/benign/benign-wrn16-1-weak2.pt", "model/benign/benign-wrn10-1-weak2.pt",
                        "model/clf/blackbox-fmnist.pt"}, got
    assert got["model/benign/benign-wrn16-1-weak2.pt"] == "changed: params"
    assert got["model/clf/blackbox-fmnist.pt"].startswith("after ")  # waits for the weak models
    preset = get_preset("smoke")
    preset["clf"]["epochs"] = 3  # the meta-classifiers only
    got = pending(args, manifest, preset)
    assert set(got) == {"model/clf/blackbox-fmnist.pt", "model/clf/gradsign-fmnist-wrn16-1.pt",
                        "model/clf/gradsign-fmnist-wrn10-1.pt"}
    assert set(got.values()) == {"changed: reads.clf"}
    preset = get_preset("smoke")
    preset["attacks"]["fine-tune"]["lr"] = 0.02  # the fine-tune attack and multi-stage's second stage
    got = pending(args, manifest, preset)
    assert {os.path.basename(k) for k in got} == {"atta-finetune-wrn16-1.pt", "atta-dft-wrn10-1.pt",
                                                  "vict-wrn16-1-dft-wrn16-1.pt", "vict-wrn16-1-dft-wrn10-1.pt",
                                                  "benign-wrn16-1-dft-wrn16-1.pt", "benign-wrn16-1-dft-wrn10-1.pt",
                                                  "blackbox-fmnist.pt"}, got
    preset = copy.deepcopy(get_preset("smoke"))
    preset["train"]["epochs"] = 3  # every model trained by train_model.py, and all after them
    assert len(pending(args, manifest, preset)) == len(Plan(preset, args).jobs) - 1  # all but the embedding


def test_plan_flag_prints_each_job_and_runs_nothing(done, tmp_path, capsys):
    args, manifest = done
    r = reproduce.main(args_of(tmp_path, "--plan"))
    out = capsys.readouterr().out
    assert r["pending"] == 0 and all(j["done"] for j in r["jobs"])
    assert "done     train     model/victim/vict-wrn16-1.pt" in out and "<- data/fmnist_seurat_10%" in out
    os.remove(os.path.join(args.workdir, "model", "attack", "atta-d-wrn10-1.pt"))
    r = reproduce.main(args_of(tmp_path, "--plan"))
    why = {j["output"]: j["reason"] for j in r["jobs"] if not j["done"]}
    assert why["model/attack/atta-d-wrn10-1.pt"] == "model/attack/atta-d-wrn10-1.pt is missing"
    assert why["model/attack/atta-dft-wrn10-1.pt"].startswith("after model/attack/atta-d-wrn10-1.pt")
    assert not os.path.exists(os.path.join(args.out, "results.json"))


def test_label_only_trains_black_box_classifiers_of_its_own(tmp_path):
    """--label-only: the black-box classifier is trained on top labels (--label-only) into its own file,
    which the black-box column reads; the white-box classifiers are the usual ones."""
    usual, labels = Plan(get_preset("smoke"), args_of(tmp_path)), Plan(get_preset("smoke"), args_of(tmp_path, "--label-only"))
    (clf,) = [j for j in labels.jobs if j.stage == "clf" and "black-box" in j.params]
    assert clf.output.endswith("blackbox-fmnist-labels.pt") and "--label-only" in clf.params
    assert labels.columns["wrn10-1", "black-box"][0] == clf.output
    assert labels.columns["wrn10-1", "white-box"] == usual.columns["wrn10-1", "white-box"]
    assert not [j for j in usual.jobs if "--label-only" in j.params]

