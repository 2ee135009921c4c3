"""Dataset Inference (ownership/dataset_inference.py): Blind Walk and MinGD against the closed-form margins of
a linear model, the one-sided Welch test against scipy, the combined rule at alpha / 2, one row per image,
query counting, and the refusals (constant suspect, short answers, a public set in a training part)."""
import os

import numpy as np
import pytest
import torch
from scipy import stats as st

from ownership import dataset_inference as di
from ownership import stats
from ownership.data import ImageSet
from ownership.errors import UserError

D = 64  # pixels of the toy images (1 x 8 x 8)
DUAL = {"linf": 1, "l2": 2, "l1": float("inf")}  # the dual norm q of each l_p


class Linear2(torch.nn.Module):
    """Binary linear classifier of pixels: logits [0, w.x + b]; class 1 iff w.x + b > 0."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(w.view(1, -1)), torch.nn.Parameter(torch.tensor(b))

    def forward(self, x):
        z = x.flatten(1) @ self.w.t() + self.b
        return torch.cat([torch.zeros_like(z), z], 1)


class Normalised(torch.nn.Module):
    """`model` of pixels as a model of fmnist-normalised images, like the project's models (PixelModel
    undoes nothing: it normalises, this un-normalises); with `classes` > 2, classes 2.. never win."""

    def __init__(self, model, classes=2):
        super().__init__()
        self.model, self.classes = model, classes

    def forward(self, z):
        two = self.model(z * 0.3530 + 0.2860)
        return torch.cat([two, torch.full((len(z), self.classes - 2), -1e3)], 1)


def toy(n=40, seed=0):
    """Images near 0.5 (no clipping within the walks and descents below), a weight vector with distinct
    magnitudes, b = -w.x_mean; labels are the classifier's own (all correctly classified)."""
    g = torch.Generator().manual_seed(seed)
    w = (torch.rand(D, generator=g) + 0.5) * torch.where(torch.rand(D, generator=g) < 0.5, -1.0, 1.0)
    x = 0.5 + 0.05 * (torch.rand(n, 1, 8, 8, generator=g) - 0.5)
    b = float(-(x.flatten(1) @ w).mean())
    model = Linear2(w, b)
    y = model(x).argmax(1)
    return model, x, y, w, b


def margin(x, w, b):
    return (x.flatten(1).double() @ w.double() + b)


def test_walk_stops_closed_form():
    """Along direction d the label of w.x + b leaves y at the first j past -m0 / (w.d): ceil of it when
    the walk heads for the hyperplane, never (steps + 1) when it heads away or the crossing is past steps."""
    model, x, y, w, b = toy()

    def oracle(q):
        with torch.no_grad():
            return model(q).argmax(1)

    d = di.walk_directions(len(x), x.shape[1:], "l2", 0.002, torch.Generator().manual_seed(1))
    steps = 50
    stops, queries = di.walk_stops(oracle, x, y, d, steps)
    m0, s = margin(x, w, b), (d.flatten(1).double() @ w.double())
    crossing = -m0 / s
    want = torch.where(crossing > 0, torch.ceil(crossing), torch.full_like(crossing, steps + 1)).long()
    want[want > steps] = steps + 1
    assert (want <= steps).any() and (want == steps + 1).any()  # both cases occur
    assert torch.equal(stops, want)
    assert torch.equal(queries, torch.clamp(want, max=steps))


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_blind_walk_features(norm):
    """A walk's feature is ||clip(x + j d) - x||_p at its stop, at least the l_p distance to the
    hyperplane |w.x + b| / ||w||_q; one row of directions per image, queries counted once."""
    model, x, y, w, b = toy()
    calls = []

    def oracle(q):
        calls.append(len(q))
        return model(q).argmax(1)

    counting = di.CountingOracle(oracle, 2, "toy")
    walk = dict(directions=4, steps=60, linf=0.004, l2=0.002, l1=0.004)
    r = di.blind_walk(counting, x, y, norms=(norm,), walk=walk, seed=3)
    assert r["features"].shape == (len(x), 1, 4)
    d = di.walk_directions(len(x) * 4, x.shape[1:], norm, walk[norm], torch.Generator().manual_seed(3000 + ("linf", "l2", "l1").index(norm)))
    j = r["stops"].view(-1)
    xr = x.repeat_interleave(4, 0)
    want = di._norm((xr + j.view(-1, 1, 1, 1) * d).clamp(0, 1) - xr, norm).view(len(x), 4)
    assert torch.allclose(r["features"][:, 0], want, rtol=1e-5)
    dist = (margin(x, w, b).abs() / w.double().norm(p=DUAL[norm])).float()
    flipped = r["stops"][:, 0] <= walk["steps"]
    assert flipped.any()
    assert (r["features"][:, 0][flipped] >= dist.view(-1, 1).expand(-1, 4)[flipped] * (1 - 1e-5)).all()
    assert counting.queries == sum(calls) == int(r["queries"].sum())
    assert torch.equal(r["queries"], 1 + torch.clamp(r["stops"][:, 0], max=walk["steps"]).sum(1))


@pytest.mark.parametrize("norm,alpha,params", [("linf", 0.001, {}), ("l2", 0.01, {}),
                                               ("l1", 0.01, dict(l1=0.01, k=1))])
def test_mingd_distance_to_hyperplane(norm, alpha, params):
    """MinGD to the other class stops within one step past the l_p distance |w.x + b| / ||w||_q (l1 with
    k = 1: one coordinate moved per step, the l1-optimal direction); the true class costs nothing."""
    model, x, y, w, b = toy()
    other = 1 - y
    delta, steps = di.mingd_delta(model, x, other, norm, params)
    dist = (margin(x, w, b).abs() / w.double().norm(p=DUAL[norm])).float()
    got = di._norm(delta, norm)
    assert (model(x + delta).argmax(1) == other).all()
    assert (got >= dist - 1e-5).all() and (got <= dist + alpha + 1e-4).all()
    assert torch.allclose(got, steps.float() * alpha, rtol=1e-4)
    same, s0 = di.mingd_delta(model, x, y, norm, params)
    assert (same == 0).all() and (s0 == 0).all()


def test_mingd_l1_top_k_step():
    """With DI's k = 100 > 1 the l1 step moves the k largest |w| by alpha_l1 / k each, so the margin grows
    by (alpha_l1 / k) * (sum of the k largest |w|) per step and ||delta||_1 = steps * alpha_l1."""
    g = torch.Generator().manual_seed(5)
    w = (torch.rand(784, generator=g) + 0.5) * torch.where(torch.rand(784, generator=g) < 0.5, -1.0, 1.0)
    x = 0.5 + 0.02 * (torch.rand(10, 1, 28, 28, generator=g) - 0.5)
    model = Linear2(w, float(-(x.flatten(1) @ w).mean()))
    y = model(x).argmax(1)
    delta, steps = di.mingd_delta(model, x, 1 - y, "l1")
    gain = 0.01 * w.abs().topk(100).values.sum()
    want = torch.floor(margin(x, w, model.b.item()).abs() / gain.double()).long() + 1
    assert torch.equal(steps, want)
    assert torch.allclose(di._norm(delta, "l1"), steps.float() * 1.0, rtol=1e-4)


def test_mingd_features_one_row_per_image():
    """mingd() of a model that takes normalised images (PixelModel normalises inside): per image and norm
    the true class gives 0 and the other class the hyperplane distance of that image, in its own row."""
    model, x, y, w, b = toy(n=12)
    r = di.mingd(Normalised(model, 10), x, y, "fmnist", params=dict(l1=0.01, k=1, iters=100))
    f = r["features"]
    assert f.shape == (12, 3, 10)
    i = torch.arange(12)
    for k, (norm, alpha) in enumerate((("linf", 0.001), ("l2", 0.01), ("l1", 0.01))):
        dist = (margin(x, w, b).abs() / w.double().norm(p=DUAL[norm])).float()
        assert (f[i, k, y] == 0).all()
        other = f[i, k, 1 - y]
        assert (other >= dist - 1e-4).all() and (other <= dist + alpha + 1e-3).all()
    row = di.rows(f, "mingd")
    assert torch.equal(row[:, 9], f[:, 0].max(1).values)  # row i holds image i's values, sorted per norm


def test_rows_one_image_per_row():
    f = torch.arange(5)[:, None, None] * 1000.0 + torch.arange(3)[None, :, None] * 10 + torch.arange(10)[None, None, :]
    for feature in ("blind-walk", "mingd"):
        r = di.rows(f.flip(2), feature)
        assert r.shape == (5, 30)
        assert (r // 1000 == torch.arange(5)[:, None]).all()  # every number of row i is image i's
    assert torch.equal(di.rows(f.flip(2), "mingd")[0, :10], torch.arange(10.0))  # sorted within a norm
    assert torch.equal(di.rows(f.flip(2), "blind-walk")[0, :10], torch.arange(10.0).flip(0))


def test_welch_greater_matches_scipy():
    rng = np.random.default_rng(0)
    for n_a, n_b, shift in ((10, 10, 0.5), (7, 13, -0.2), (30, 5, 0.0)):
        a, b = rng.normal(shift, 1.0, n_a), rng.normal(0, 2.5, n_b)
        r = stats.welch_greater(a, b)
        want = st.ttest_ind(a, b, equal_var=False, alternative="greater")
        assert r["p_value"] == pytest.approx(want.pvalue, rel=1e-10)
        assert r["t"] == pytest.approx(want.statistic, rel=1e-10)
        assert r["delta_mu"] == pytest.approx(a.mean() - b.mean())
    assert stats.welch_greater([1, 1], [0, 0])["p_value"] == 0.0  # constant samples: no t
    assert stats.welch_greater([0, 0], [1, 1])["p_value"] == 1.0


def test_di_test_first_block_and_disjoint_blocks():
    rng = np.random.default_rng(1)
    pri, pub = rng.normal(0, 1, 50), rng.normal(0.8, 1, 50)
    r = di.di_test(pri, pub, m=10, alpha=0.05)
    want = st.ttest_ind(pub[:10], pri[:10], equal_var=False, alternative="greater").pvalue
    assert r["p_value"] == pytest.approx(want)
    rates = [st.ttest_ind(pub[k:k + 10], pri[k:k + 10], equal_var=False, alternative="greater").pvalue < 0.05
             for k in range(0, 50, 10)]
    assert r["draws"] == 5 and r["detection_rate"] == pytest.approx(np.mean(rates))
    assert r["verdict"] == ("stolen" if want < 0.05 else "not stolen")
    assert r["p_all"] == pytest.approx(st.ttest_ind(pub, pri, equal_var=False, alternative="greater").pvalue)
    with pytest.raises(UserError, match="--m 60"):
        di.di_test(pri, pub, m=60)


def test_combined_verdict_at_half_alpha():
    assert di.combined_verdict(0.004, 0.9)["rejected_by"] == ["move"]
    assert di.combined_verdict(0.9, 0.004)["verdict"] == "stolen"
    r = di.combined_verdict(0.006, 0.006)  # each would convict alone at alpha = 0.01, neither at 0.005
    assert r["verdict"] == "not stolen" and r["level"] == 0.005
    assert di.combined_verdict(0.005, 0.5)["verdict"] == "not stolen"  # strict, as every verdict here
    assert di.combined_verdict(0.02, 0.5, alpha=0.05)["verdict"] == "stolen"
    with pytest.raises(ValueError):
        di.combined_verdict(None, 0.1)


def test_constant_suspect_and_short_answers_refused():
    model, x, y, w, b = toy()
    const = di.CountingOracle(lambda q: torch.full((len(q),), 3), 10, "suspect.pt")
    with pytest.raises(UserError, match="same label") as e:
        di.blind_walk(const, x, torch.arange(len(x)) % 10)
    assert "\n" not in str(e.value) and "suspect.pt" in str(e.value)
    short = di.CountingOracle(lambda q: model(q[:-1]).argmax(1), 2, "http://127.0.0.1:8000/")
    with pytest.raises(UserError, match="answered 39 labels for 40 images") as e:
        di.blind_walk(short, x, y)
    assert "\n" not in str(e.value)
    for bad in (lambda q: torch.rand(len(q)), lambda q: torch.full((len(q),), 7)):
        with pytest.raises(UserError):
            di.CountingOracle(bad, 2)(x)


def _toy_sets(x, y, n_fit=16):
    """Synthetic private/public sets as uint8 ImageSets (the images of toy(), quantised)."""
    s = ImageSet((x * 255).round().to(torch.uint8), y, ["a", "b"])
    half = len(x) // 2
    return dict(private_fit=s.subset(range(n_fit // 2)), public_fit=s.subset(range(half, half + n_fit // 2)),
                private_test=s.subset(range(n_fit // 2, half)), public_test=s.subset(range(half + n_fit // 2, len(x))))


def test_dataset_inference_end_to_end_counts_queries():
    """Fit on a victim, test a local model and the same model as a label oracle: same p, and the reported
    queries are the labels the oracle was asked."""
    model, x, y, w, b = toy(n=48)
    sets = _toy_sets(x, y)
    walk = dict(directions=3, steps=20, linf=0.004, l2=0.002, l1=0.004)
    d = di.DatasetInference(Normalised(model), sets, "fmnist", walk=walk, m=4)
    r = d(Normalised(model), "victim")
    asked = []

    def oracle(q):
        asked.append(len(q))
        return model(q).argmax(1)

    r2 = d(oracle, "the endpoint")
    assert r2["p_value"] == pytest.approx(r["p_value"]) and r2["queries"] == r["queries"] == sum(asked)
    assert 0 <= r["p_value"] <= 1 and r["draws"] == 4 and r["m"] == 4
    with pytest.raises(UserError, match="weights"):
        di.DatasetInference(Normalised(model, 10), sets, "fmnist", feature="mingd", m=4,
                            mingd_params=dict(iters=5))(oracle, "the endpoint")


def test_sets_disjoint_and_overlap_refused(tmp_path):
    """di_sets on the smoke preset: private = victim part minus its stylised images, public = training
    images outside every part, fit and test disjoint; the same sets checked against another seed's parts
    (a victim trained on another split) are refused with the fix."""
    from ownership.data import load_dataset, split_indices
    from ownership.presets import get_preset
    from tests.conftest import fake_styled
    fake_styled(str(tmp_path))
    p = get_preset("smoke")
    sets = di.di_sets(p, str(tmp_path), 0, fit=20, test=10)
    parts, styled = sets["parts"], sets["styled"]
    di.check_sets(sets, parts, styled, "pass --seed 0")
    pub = torch.cat([sets["public_fit"].idx, sets["public_test"].idx])
    pri = torch.cat([sets["private_fit"].idx, sets["private_test"].idx])
    assert sets["public_split"] == "train" and len(pub.unique()) == 30 and len(pri.unique()) == 30
    assert not any(torch.isin(pub, v).any() for v in parts.values())
    assert torch.isin(pri, parts["victim"]).all() and not torch.isin(pri, styled).any()
    n = len(load_dataset("fmnist", str(tmp_path))["train"])
    other = split_indices(n, p["split"], 7)
    with pytest.raises(UserError, match="pass --seed 0") as e:
        di.check_sets(sets, other, styled, "pass --seed 0")
    assert "\n" not in str(e.value)


def test_script_results_never_overwrite(tmp_path):
    """dataset_inference.py names its results file after the first free one and refuses an existing --out."""
    import argparse
    import dataset_inference as script
    args = argparse.Namespace(out=None, force=False, results_dir=str(tmp_path), victim="model/victim/vict-wrn16-1.pt",
                              feature="blind-walk")
    first = script.out_path(args, "fmnist")
    assert first.endswith("fmnist/di-vict-wrn16-1-blind-walk.json")
    os.makedirs(os.path.dirname(first))
    open(first, "w").close()
    assert script.out_path(args, "fmnist").endswith("di-vict-wrn16-1-blind-walk-2.json")
    args.out = first
    with pytest.raises(UserError, match="--force"):
        script.out_path(args, "fmnist")
    args.force = True
    assert script.out_path(args, "fmnist") == first
