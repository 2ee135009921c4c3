"""The transfer gap of reproduce.py's table (issue 30), by hand."""
import pytest

from ownership.constants import COLUMNS
from reproduce import add_transfer_gap, table


def rows():
    r = lambda mode, acc: dict(mode=mode, suspect=f"{mode}.pt", arch="wrn10-1", clean_acc=0.8, stylised_acc=acc)  # noqa: E731
    return [r("source", 0.80), r("label-query", 0.30), r("independent", 0.20), r("independent", 0.24),
            r("independent", 0.90)]  # the last: a hard negative, not in the mean of the first two


def test_gap_is_stylised_accuracy_minus_the_preset_independents_mean():
    out = rows()
    add_transfer_gap(out, 2)
    assert [r["transfer_gap"] for r in out] == pytest.approx([0.58, 0.08, -0.02, 0.02, 0.68])


def test_gap_is_missing_without_accuracies_and_shown_as_a_dash():
    out = rows()
    out[2]["stylised_acc"] = None
    add_transfer_gap(out, 2)
    assert all(r["transfer_gap"] is None for r in out)
    for r in out:
        r.update({c: dict(p_value=0.5, delta_mu=0.0, verdict="benign") for c in COLUMNS})
    md = table(dict(rows=out)).splitlines()
    assert md[0].count("|") == md[1].count("|") == md[2].count("|") and "| — |" in md[2]
