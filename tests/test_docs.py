"""README's quoted defaults agree with ownership/presets.py (issue 29: docs state the present).

    python -m pytest -q tests/test_docs.py

README quotes the fmnist protocol (m and tau per verdict column, alpha, the test, how many references and
models per architecture) in several sentences. Each sentence is parsed here and compared with the preset,
column by column; every m, tau and alpha quoted anywhere in README must be a value some preset has. No
model is trained.
"""
import copy
import os
import re

import pytest

from ownership.constants import ALPHA, COLUMNS
from ownership.presets import DATASETS, PRESETS, per_column

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
NUM = r"(\d+(?:\.\d+)?)"
BB_AND_BASELINE = ("black-box", "baseline")


def readme_text():
    """README with its whitespace collapsed, so that a sentence broken over lines parses as one."""
    with open(README, encoding="utf-8") as f:
        return re.sub(r"\s+", " ", f.read())


def _per_column(white_box, others):
    return {"white-box": float(white_box), **{c: float(others) for c in BB_AND_BASELINE}}


def _protocol_quotes(text, preset):
    """(what, quoted, preset's) for each sentence that quotes the protocol's m, tau, alpha and test."""
    m = {c: float(per_column(preset["m"], c)) for c in COLUMNS}
    tau = {c: float(per_column(preset["tau"], c)) for c in COLUMNS}
    # results table: "m = 100 images white-box and 50 black-box and baseline, α = 0.01, margin τ = 0.05
    # white-box and 0.1 black-box and baseline"
    for g in re.finditer(rf"m = {NUM} images white-box and {NUM} black-box and baseline, α = {NUM}, margin "
                         rf"τ = {NUM} white-box and {NUM} black-box and baseline", text):
        yield "results m", _per_column(g[1], g[2]), m
        yield "results alpha", float(g[3]), ALPHA
        yield "results tau", _per_column(g[4], g[5]), tau
    # validity section: "α = 0.01, m = 100 white-box and 50 black-box and baseline"
    for g in re.finditer(rf"α = {NUM}, m = {NUM} white-box and {NUM} black-box and baseline", text):
        yield "validity alpha", float(g[1]), ALPHA
        yield "validity m", _per_column(g[2], g[3]), m
    # ownership_verification.py's defaults: "fmnist paired-all, white-box m = 100, τ = 0.05, black-box and
    # baseline m = 50, τ = 0.1"
    for g in re.finditer(rf"fmnist ([a-z-]+), white-box m = {NUM}, τ = {NUM}, black-box and baseline "
                         rf"m = {NUM}, τ = {NUM}", text):
        yield "defaults test", g[1], preset["test"]
        yield "defaults m", _per_column(g[2], g[4]), m
        yield "defaults tau", _per_column(g[3], g[5]), tau
    for g in re.finditer(rf"stolen when p < α = {NUM}", text):
        yield "method alpha", float(g[1]), ALPHA


def _model_quotes(text, preset):
    """(what, quoted, preset's) for the sentences that count references and models per architecture."""
    d = DATASETS[preset["dataset"]]
    archs = len({d["victim_arch"], d["attacker_arch"]})
    refs_black_box = preset["references"] * (archs if preset["black_box"] == "any-arch" else 1)
    # results table: "the 4 of the suspect's architecture; black-box: the 8 of both"
    for g in re.finditer(r"the (\d+) of the suspect's architecture; black-box: the (\d+) of both", text):
        yield "results references", (int(g[1]), int(g[2])), (preset["references"], refs_black_box)
    # what reproduce.py does: "per architecture: 2 victim-like and 4 benign models behind the classifiers,
    # 2 weak and 4 untrained (black-box), 4 held-out benign references; 2 independent models"
    cm = preset["clf_models"]
    weak = [n for n in cm["weak"] if n > 0]
    for g in re.finditer(r"per architecture: (\d+) victim-like and (\d+) benign models behind the classifiers, "
                         r"(\d+) weak and (\d+) untrained \(black-box\), (\d+) held-out benign references; "
                         r"(\d+) independent models", text):
        quoted = tuple(int(x) for x in g.groups())
        yield "reproduce.py models", quoted, (cm["victims"], cm["benigns"], len(weak),
                                             len(cm["weak"]) - len(weak), preset["references"],
                                             len(preset["independents"]))


def mismatches(text, preset):
    """The quotes of README that disagree with `preset` (fmnist's), and the sentences not found at all."""
    bad, found = [], set()
    for what, quoted, wanted in [*_protocol_quotes(text, preset), *_model_quotes(text, preset)]:
        found.add(what.split()[0])
        if quoted != wanted:
            bad.append(f"README {what}: {quoted}, presets.py: {wanted}")
    missing = {"results", "validity", "defaults", "method", "reproduce.py"} - found
    return bad + [f"README no longer quotes the {w} sentence this test parses" for w in sorted(missing)]


def test_readme_quotes_the_fmnist_preset():
    assert mismatches(readme_text(), PRESETS["fmnist"]) == []


def test_every_quoted_value_is_a_presets_value():
    """A stale m, tau or alpha anywhere in README (not only in the parsed sentences) fails."""
    text = readme_text()
    values = {k: {float(per_column(PRESETS[p][k], c)) for p in ("fmnist", "cifar10", "imagenet") for c in COLUMNS}
              for k in ("m", "tau")}
    quoted = {"m": re.findall(rf"\bm = {NUM}", text), "tau": re.findall(rf"τ = {NUM}", text)}
    assert quoted["m"] and quoted["tau"]
    for k, found in quoted.items():
        assert {float(v) for v in found} <= values[k], f"README quotes {k} values {found}, presets: {values[k]}"
    assert {float(v) for v in re.findall(rf"α = {NUM}", text)} == {ALPHA}


@pytest.mark.parametrize("change", [
    ("m", {"white-box": 50, "black-box": 50, "baseline": 50}),
    ("m", {"white-box": 100, "black-box": 100, "baseline": 50}),
    ("tau", {"white-box": 0.1, "black-box": 0.1, "baseline": 0.1}),
    ("tau", {"white-box": 0.05, "black-box": 0.1, "baseline": 0.05}),
    ("references", 3),
    ("test", "paper"),
    ("black_box", "per-arch"),
    ("clf_models", dict(PRESETS["fmnist"]["clf_models"], benigns=3)),
    ("clf_models", dict(PRESETS["fmnist"]["clf_models"], weak=[256, 512, 0, 0])),
    ("independents", [("wrn10-1", 101)]),
])
def test_a_changed_preset_is_caught(change):
    """The comparison can fail: each changed preset value disagrees with README."""
    preset = copy.deepcopy(PRESETS["fmnist"])
    preset[change[0]] = change[1]
    assert mismatches(readme_text(), preset)
