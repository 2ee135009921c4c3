"""reproduce.py --method both (issue 31, item 4): Dataset Inference as one job of the plan, after every
suspect, and the di and combined columns read from its results, the combined rule checked by hand.
No model is trained: the plan is data and DI's results are written here (the end-to-end run on the smoke
artefacts: tests/test_reproduce_smoke.py, test_dataset_inference_columns)."""
import json
import os

import pytest

import dataset_inference
import reproduce
from ownership.constants import COLUMNS, DI_COLUMNS
from ownership.errors import UserError
from ownership.plan import Plan
from ownership.presets import get_preset


def plan_of(tmp_path, *flags, preset=None):
    args = reproduce.get_parser().parse_args(["--preset", "smoke", "--workdir", str(tmp_path / "work"),
                                              "--out", str(tmp_path / "results"), *flags])
    return Plan(preset or get_preset("smoke"), args)


def test_move_alone_plans_no_dataset_inference(tmp_path):
    plan = plan_of(tmp_path)
    assert plan.method == "move" and not [j for j in plan.jobs if j.stage == "di"]


def test_both_adds_one_job_after_every_suspect(tmp_path):
    plan = plan_of(tmp_path, "--method", "both")
    (job,) = [j for j in plan.jobs if j.stage == "di"]
    assert plan.jobs[-1] == job and job.output == plan.di_results
    victim = plan.file(plan.victim_arch, "pos")[0]
    models = list(dict.fromkeys(p for _, p, _ in plan.suspects))
    assert job.inputs == (victim, *models)
    argv = plan.argv(job)
    assert argv[argv.index("--victim") + 1] == victim and argv[argv.index("--out") + 1] == plan.di_results
    assert plan.settings(job)["reads"]["di_images"] == dict(fit=20, test=20)  # read by di_sets, no flag
    parsed = dataset_inference.get_parser().parse_args(argv)  # the script takes the job's command line
    assert parsed.suspects == models and parsed.seed == 0 and parsed.preset == "smoke"


def test_a_preset_method_outside_the_vocabulary_is_refused(tmp_path):
    preset = get_preset("smoke")
    preset["method"] = "fisher"
    with pytest.raises(UserError, match="method 'fisher' is not one of move, both"):
        plan_of(tmp_path, preset=preset)


def rows_with(p_black_box):
    return [dict(mode="source", suspect=f"model/s{k}.pt", arch="wrn10-1",
                 **{c: dict(p_value=p if c == "black-box" else 0.5, delta_mu=0.1, verdict="x") for c in COLUMNS})
            for k, p in enumerate(p_black_box)]


def test_combined_column_is_bonferroni_by_hand(tmp_path):
    plan = plan_of(tmp_path, "--method", "both")
    # (p black-box, p DI): stolen when either is below alpha / 2 = 0.005, not at 0.006 and 0.009
    cases = [(0.004, 0.9), (0.9, 0.004), (0.006, 0.009), (0.2, 0.3)]
    rows = rows_with([a for a, _ in cases])
    os.makedirs(os.path.dirname(plan.di_results))
    suspects = [dict(suspect=os.path.join(plan.workdir, r["suspect"]), p_value=b, delta_mu=0.2,
                     verdict="stolen" if b < 0.01 else "not stolen", queries=1000 + k)
                for k, (r, (_, b)) in enumerate(zip(rows, cases))]
    with open(plan.di_results, "w") as f:
        json.dump(dict(suspects=suspects[::-1]), f)  # found by path, not by order
    reproduce.add_dataset_inference(rows, plan, 0.01)
    assert [r["combined"]["verdict"] for r in rows] == ["stolen", "stolen", "not stolen", "not stolen"]
    assert [r["combined"]["rejected_by"] for r in rows] == [["move"], ["di"], [], []]
    assert [r["combined"]["p_value"] for r in rows] == pytest.approx([0.008, 0.008, 0.012, 0.4])
    assert [r["di"]["queries"] for r in rows] == [1000, 1001, 1002, 1003]
    assert reproduce.verdict_columns(rows) == list(COLUMNS + DI_COLUMNS)
    md = reproduce.table(dict(rows=[dict(r, clean_acc=None, stylised_acc=None) for r in rows])).splitlines()
    assert " di p | Δμ | verdict | combined p | Δμ | verdict |" in md[0] and md[2].endswith("| — | stolen |")



def test_evaluate_rates_of_the_di_columns_by_hand():
    import evaluate

    def row(mode, p_di, v_combined):
        return dict(mode=mode, di=dict(p_value=p_di, verdict="stolen" if p_di < 0.01 else "not stolen"),
                    combined=dict(p_value=2 * p_di, verdict=v_combined))
    runs = [(63, dict(rows=[row("source", 0.001, "stolen"), row("independent", 0.5, "not stolen")]), None),
            (64, dict(rows=[row("source", 0.2, "stolen"), row("independent", 0.004, "stolen")]), None)]
    r = evaluate.di_rates(runs, ["source", "independent"])
    assert r["di"]["source"] == dict(n=2, detected=0.5, median_p=pytest.approx(0.1005))
    assert r["di"]["independent"]["detected"] == 0.5 and r["combined"]["source"]["detected"] == 1.0
    assert evaluate.di_rates([(63, dict(rows=[dict(mode="source")]), None)], ["source"]) == {}  # MOVE alone


def test_verification_through_an_api_refuses_dataset_inference(capsys):
    """Blind Walk's queries depend on the answers: --method both needs the checkpoint, one line, exit 2."""
    import ownership_verification as ov
    from ownership import cli
    with pytest.raises(SystemExit) as e:
        cli.run(ov.main, ov.get_parser(), ["--endpoint", "http://127.0.0.1:9/", "--method", "both"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--method move" in err[0]

