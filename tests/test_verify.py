"""The one verification path: the protocol chosen once from a preset, the test on P(stolen), and
strict JSON for everything written."""
import argparse
import json

import numpy as np
import pytest

import ownership_verification
from ownership import cli, jsonio, stats, verify
from ownership.errors import UserError
from ownership.presets import PRESETS, get_preset
from ownership.verify import Protocol


def test_protocol_follows_the_preset():
    # fmnist's m and margin are per verdict column: the white-box column's own, more images, smaller margin
    assert Protocol.from_preset(get_preset("fmnist"), column="white-box") == Protocol("paired-all", 100, 0.05, 0.01)
    for column in ("black-box", "baseline"):
        assert Protocol.from_preset(get_preset("fmnist"), column=column) == Protocol("paired-all", 50, 0.1, 0.01)
    with pytest.raises(ValueError, match="per column"):
        Protocol.from_preset(get_preset("fmnist"))  # which column's m and margin?
    assert Protocol.from_preset(get_preset("cifar10")) == Protocol("paired-all", 10, 0.0, 0.01)
    assert Protocol.from_preset(get_preset("fmnist"), "reference") == Protocol("reference", 10, None, 0.01)
    assert Protocol.from_preset(get_preset("fmnist"), m=7, tau=0.0) == Protocol("paired-all", 7, 0.0, 0.01)
    assert Protocol.from_preset(get_preset("fmnist"), "spread", column="black-box") == Protocol("spread", 50, None, 0.01)
    with pytest.raises(UserError, match="has no margin"):
        Protocol.from_preset(get_preset("fmnist"), "spread", tau=0.1, column="white-box")
    with pytest.raises(UserError, match="at least 2"):
        Protocol.from_preset(get_preset("fmnist"), m=1)
    assert json.loads(jsonio.dumps(Protocol.from_preset(get_preset("smoke"), column="black-box").record()))["test"] == \
        "paired-all"


def test_protocol_record_round_trip():
    """The per-column protocols survive results.json: one m and one tau where the columns agree, a dict
    where not."""
    for name, ms, taus in (("fmnist", {"white-box": 100, "black-box": 50, "baseline": 50},
                            {"white-box": 0.05, "black-box": 0.1, "baseline": 0.1}), ("cifar10", 10, 0.0)):
        protocols = {c: Protocol.from_preset(get_preset(name), column=c) for c in ("white-box", "black-box", "baseline")}
        record = json.loads(jsonio.dumps(verify.record_columns(protocols)))
        assert record["m"] == ms and record["tau"] == taus and verify.protocols_from_record(record) == protocols
    assert verify.describe({"white-box": 0.05, "black-box": 0.1}) == "white-box 0.05, black-box 0.1"
    assert verify.describe(50) == "50"
    with pytest.raises(ValueError, match="per column"):
        verify.per_column({"white-box": 100}, "black-box")


def _args(**kw):
    base = dict(dataset="fmnist", preset=None, m=None, tau=None, test=None, alpha=None, access="white-box")
    return argparse.Namespace(**dict(base, **kw))


def test_verification_script_takes_the_datasets_preset():
    def f(args):  # the preset as the script resolves it (cli.preset_of), then its protocol
        args.scale = 1.0
        return ownership_verification.protocol_of(args, cli.preset_of(args))
    assert f(_args()) == Protocol.from_preset(PRESETS["fmnist"], column="white-box")
    assert f(_args(access="black-box")).tau == 0.1 and f(_args(access="baseline")).tau == 0.1
    assert f(_args(dataset="cifar10")) == Protocol("paired-all", 10, 0.0, 0.01)
    assert f(_args()).m == 100 and f(_args(access="black-box")).m == f(_args(access="baseline")).m == 50
    assert f(_args(preset="smoke")).m == PRESETS["smoke"]["m"]["white-box"]
    assert f(_args(test="reference")).m == 10  # the reference code's 40 draws of 10
    assert f(_args(m=7, tau=0.0, alpha=0.05)) == Protocol("paired-all", 7, 0.0, 0.05)


def test_detection_rate_uses_the_margin():
    """A suspect 0.05 above its references on every image: detected at tau = 0, never at tau = 0.1."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 200)
    refs = base + rng.normal(0, 0.01, (4, 200))
    p_s = base + 0.05 + rng.normal(0, 0.01, 200)
    order = np.arange(200)
    assert verify.detection_rate(p_s, refs, Protocol("paired-all", 50, 0.0, 0.01), seed=0, order=order) == 1.0
    assert verify.detection_rate(p_s, refs, Protocol("paired-all", 50, 0.1, 0.01), seed=0, order=order) == 0.0


def _strict(text):
    """json.loads that rejects NaN and Infinity, as RFC 8259 parsers do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_a_copy_of_a_reference_gives_strict_json():
    """Every paired difference 0 (the suspect is a byte copy of the reference): no t statistic, p = 1,
    and the record serialises as strict JSON."""
    p = np.random.default_rng(1).uniform(0, 1, 60)
    r = verify.test(p, [p], Protocol("paired-all", 50, 0.1, 0.01), seed=0)
    assert r["p_value"] == 1.0 and r["t"] is None and r["verdict"] == "not stolen"
    assert _strict(jsonio.dumps(r))["t"] is None
    assert stats.welch_test([0.5] * 4, [0.5] * 4) == (None, 1.0)


def test_jsonio_turns_every_non_finite_number_into_null():
    obj = {"a": float("inf"), "b": [np.float32("nan"), -np.inf], "c": np.array([1.0, np.nan]), "d": np.int64(3)}
    assert _strict(jsonio.dumps(obj)) == {"a": None, "b": [None, None], "c": [1.0, None], "d": 3}
