"""Mixed precision of the training steps and the meta-classifier's early stop."""
import numpy as np
import pytest
import torch

import ownership.training as tr
from network import get_model
from ownership import metaclf
from ownership.errors import UserError
from ownership.presets import PRESETS


@pytest.mark.parametrize("native", [False, True])
def test_amp_dtype(monkeypatch, native):
    monkeypatch.setattr(tr, "cpu_has_bf16", lambda: native)
    assert tr.amp_dtype("cpu", "auto") == (torch.bfloat16 if native else None)
    assert tr.amp_dtype("cpu", "none") is None and tr.amp_dtype("cuda", "none") is None
    assert tr.amp_dtype("cpu", "bf16") == torch.bfloat16
    assert tr.amp_dtype("cuda", "auto") == torch.bfloat16
    assert tr.amp_name("cpu", "auto") == ("bf16" if native else "fp32") and tr.amp_name("cpu", "none") == "fp32"
    with pytest.raises(UserError, match="fp16"):
        tr.amp_dtype("cpu", "fp16")


def test_autocast_runs_the_model_in_bf16_only_when_asked():
    model = get_model("wrn10-1", 10, 1).eval()
    x = torch.randn(4, 1, 28, 28)
    with tr.autocast("cpu", "bf16"):
        assert model(x).dtype == torch.bfloat16
    with tr.autocast("cpu", "none"):
        assert model(x).dtype == torch.float32


def test_bf16_training_learns_like_fp32():
    """The same separable toy task trained in fp32 and in bf16: both fit it, and the weights differ
    (the autocast path really ran)."""
    from ownership.data import ImageSet
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    x = torch.randint(0, 60, (256, 1, 28, 28), generator=g, dtype=torch.uint8)
    x[y == 1, :, :14] += 150  # class 1: a bright upper half
    images = ImageSet(x, y, ["a", "b"])
    out = {}
    for amp in ("none", "bf16"):
        torch.manual_seed(0)
        model = tr.train(get_model("wrn10-1", 2, 1), images, "fmnist", epochs=3, lr=0.05, batch=32, seed=1, amp=amp,
                         augment=False)
        out[amp] = model
        assert tr.accuracy(model, images, "fmnist", "cpu") > 0.9, amp
    w = [next(m.parameters()) for m in out.values()]
    assert not torch.equal(w[0], w[1])


def test_metaclf_stop_at_perfect_changes_nothing():
    """Separable features: held-out accuracy reaches 100 % early; stopping there keeps the very
    classifier that all epochs keep (the first best epoch), and runs fewer epochs."""
    rng = np.random.default_rng(0)
    pos = [rng.normal(1.0, 1.0, (60, 40)).astype(np.float32) for _ in range(2)]
    neg = [rng.normal(-1.0, 1.0, (60, 40)).astype(np.float32) for _ in range(2)]
    kw = dict(epochs=15, lr=0.01, batch_size=32, hidden_cap=16, seed=3)
    early = metaclf.fit(pos, neg, stop_at_perfect=True, **kw)
    full = metaclf.fit(pos, neg, stop_at_perfect=False, **kw)
    assert early["test_acc"] == full["test_acc"] == 1.0
    assert early["best_epoch"] == full["best_epoch"] and early["epochs_run"] == early["best_epoch"] + 1
    assert full["epochs_run"] == 15 > early["epochs_run"]
    for k in full["state_dict"]:
        assert torch.equal(early["state_dict"][k], full["state_dict"][k]), k


def test_auc_is_mann_whitney():
    from scipy import stats as st
    rng = np.random.default_rng(2)
    p = rng.normal(1, 1, 7)
    n = np.concatenate([rng.normal(0, 1, 9), [p[0]]])  # one tie
    u = st.mannwhitneyu(p, n, alternative="two-sided").statistic
    assert metaclf.auc(p, n) == pytest.approx(u / (len(p) * len(n)), rel=1e-12)
    assert metaclf.auc([2, 3], [0, 1]) == 1.0 and metaclf.auc([0], [1]) == 0.0 and metaclf.auc([1], [1]) == 0.5


def test_model_level_auc_sees_models_not_images():
    """Each model's rows carry its own offset. Victim-like models share a feature that benign ones lack:
    a left-out pair is still ranked right (AUC 1). Without a shared feature the left-out victim-like
    model is no better than the benign one (AUC near chance, not 1); leaving one model out at a time
    would have scored it below every benign model from the class balance alone."""
    rng = np.random.default_rng(0)
    kw = dict(epochs=10, lr=0.01, batch_size=32, hidden_cap=16, seed=1)
    model = lambda shift: (rng.normal(0, 1, (40, 20)) + rng.normal(0, 2, 20) + shift).astype(np.float32)  # noqa: E731
    feature = np.r_[np.full(5, 6.0), np.zeros(15)]
    r = metaclf.model_level_auc([model(feature) for _ in range(3)], [model(0) for _ in range(4)], **kw)
    assert r["auc"] == 1.0 and len(r["pairs"]) == 12 and {(i, j) for i, j, _, _ in r["pairs"]} == \
        {(i, j) for i in range(3) for j in range(4)}
    r = metaclf.model_level_auc([model(0) for _ in range(3)], [model(0) for _ in range(4)], **kw)
    assert 0.1 <= r["auc"] <= 0.9
    few = metaclf.model_level_auc([model(0) for _ in range(5)], [model(0) for _ in range(5)], max_pairs=6, **kw)
    assert len(few["pairs"]) == 6
    assert metaclf.model_level_auc([model(0)], [model(0), model(0)], **kw) is None


def test_lr_schedules():
    total, lr = 100, 0.1
    tri = [tr.lr_at(s, total, lr, "triangular") for s in (0, 40, 80, 100)]
    assert np.allclose(tri, [0, lr, lr / 10, 0])
    one = [tr.lr_at(s, total, lr, "onecycle") for s in range(total + 1)]
    assert one[0] == pytest.approx(lr / 25) and max(one) == pytest.approx(lr) and one[25] == pytest.approx(lr)
    assert one[-1] == pytest.approx(lr / 25e4) and all(a >= b for a, b in zip(one[25:], one[26:]))
    with pytest.raises(UserError, match="schedule"):
        tr.lr_at(0, total, lr, "cosine")


def test_every_preset_names_its_recipe():
    for name, p in PRESETS.items():
        cfgs = [p["train"]] + [c for mode, c in p["attacks"].items() if mode != "zero-shot"]
        for cfg in cfgs:
            r = tr.recipe(cfg)
            assert r["augment"] in (True, False, "flip") and r["schedule"] in tr.SCHEDULES, (name, cfg)
    with pytest.raises(UserError, match="lacks"):
        tr.recipe(dict(epochs=1))


def test_distillation_without_augmentation_queries_the_victim_once(monkeypatch):
    """Soft targets computed once equal the per-step queries when no augmentation changes the images."""
    from ownership import attacks
    from ownership.data import ImageSet
    g = torch.Generator().manual_seed(0)
    images = ImageSet(torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (64,), generator=g), [str(i) for i in range(10)])
    torch.manual_seed(0)
    victim = get_model("wrn10-1", 10, 1).eval()
    calls = []
    monkeypatch.setattr(victim, "forward", lambda x, f=victim.forward: calls.append(len(x)) or f(x))
    cfg = dict(epochs=3, lr=0.05, batch=16, temperature=2.0, augment=False, label_smoothing=0.1, schedule="onecycle")
    torch.manual_seed(1)
    once = attacks.distillation(victim, get_model("wrn10-1", 10, 1), images, "fmnist", cfg, "cpu", 5, amp="none")
    assert sum(calls) == len(images)  # one query per image, not per image and epoch
    torch.manual_seed(1)
    every = tr.train(get_model("wrn10-1", 10, 1), images, "fmnist", epochs=3, lr=0.05, batch=16, seed=5,
                     teacher=victim, temperature=2.0, augment=False, label_smoothing=0.1, schedule="onecycle",
                     amp="none")
    for a, b in zip(once.state_dict().values(), every.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4)


def test_softmax_matches_the_plain_pass_and_keeps_the_layout():
    """training.softmax (channels_last, batch INFER_BATCH) gives the contiguous one-batch pass's
    probabilities to float32 rounding, and hands the model back in the layout it came in."""
    torch.manual_seed(0)
    model = get_model("wrn10-1", 10, 1)
    model.train(True)
    tr.train(model, _toy_images(), "fmnist", epochs=1, lr=0.05, batch=32, augment=False, amp="none")  # real BN stats
    model.to(memory_format=torch.contiguous_format)
    x = torch.randint(0, 256, (150, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        want = torch.softmax(model.eval()(tr.normalise(x, "fmnist", "cpu")), 1)
    got = tr.softmax(model, x, "fmnist")
    assert got.shape == (150, 10) and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())
    model.to(memory_format=torch.channels_last)
    tr.softmax(model, x, "fmnist")
    conv = model.conv1.weight if model.conv1.weight.shape[1] > 1 else model.blocks[0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def _toy_images(n=96):
    from ownership.data import ImageSet
    g = torch.Generator().manual_seed(1)
    return ImageSet(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
                    torch.randint(0, 10, (n,), generator=g), list(range(10)), torch.arange(n))
