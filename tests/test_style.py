"""Style transfer (ownership/style.py) and the embed stage (embed_features.py), on small inputs."""
import json
import os

import numpy as np
import pytest
import torch

import embed_features
from ownership import data, style
from ownership.errors import UserError
from ownership.presets import get_preset

FAST = dict(steps=8, lr=0.05, style_weight=0.7, content_weight=1.0, image_size=28, style_scale=2)


def shapes(n, channels, size=28, seed=0):
    """Bright filled rectangles on black, a stand-in for Fashion-MNIST (CIFAR-like when 3 channels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, channels, size, size, dtype=torch.uint8)
    for i in range(n):
        a, b = torch.randint(2, size // 2, (2,), generator=g).tolist()
        c, d = torch.randint(size // 2 + 2, size - 2, (2,), generator=g).tolist()
        x[i, :, a:c, b:d] = torch.randint(120, 256, (channels, 1, 1), generator=g).to(torch.uint8)
    return x


def corr(a, b):
    return float(np.corrcoef(a.float().flatten(), b.float().flatten())[0, 1])


def test_canvas_is_reproducible():
    a, b = style.make_pointillist_canvas(64, seed=1), style.make_pointillist_canvas(64, seed=1)
    assert a.mode == "RGB" and a.size == (64, 64)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(style.make_pointillist_canvas(64, seed=2)))


def test_committed_style_image_matches_the_generator():
    assert os.path.getsize(style.STYLE_PATH) < 200_000
    assert np.array_equal(np.asarray(style.default_style_image()), np.asarray(style.make_pointillist_canvas()))


def test_grey_input_equals_three_equal_channels():
    enc = style.build_encoder()
    x = torch.rand(2, 1, 28, 28)
    for a, b in zip(enc(x), enc(x.expand(-1, 3, -1, -1))):
        assert torch.allclose(a, b, atol=1e-4)
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training


def test_stylise_shape_dtype_and_determinism():
    x, img, enc = shapes(6, 1), style.default_style_image(), style.build_encoder()
    y1 = style.stylise(x, img, encoder=enc, luminance=True, seed=3, batch_size=6, **FAST)
    y2 = style.stylise(x, img, encoder=enc, luminance=True, seed=3, batch_size=4, **FAST)
    assert y1.shape == x.shape and y1.dtype == torch.uint8
    assert (y1.int() - y2.int()).abs().max() <= 1          # same seed, any batch size
    y3 = style.stylise(x, img, encoder=enc, luminance=True, seed=4, batch_size=6, **FAST)
    assert not torch.equal(y1, y3)


@pytest.mark.parametrize("channels,luminance", [(1, True), (1, False), (3, True), (3, False)])
def test_stylise_changes_images_but_keeps_content(channels, luminance):
    x = shapes(6, channels, size=28 if channels == 1 else 32)
    y = style.stylise(x, style.default_style_image(), encoder=style.build_encoder(), luminance=luminance,
                      **dict(FAST, image_size=x.shape[-1]))
    assert y.shape == x.shape
    assert (y.float() - x.float()).abs().mean() > 8       # a visible texture
    assert corr(x, y) > 0.6                               # the content is still there


def test_luminance_mode_keeps_colours():
    x = shapes(4, 3, size=32)
    y = style.stylise(x, style.default_style_image(), encoder=style.build_encoder(), luminance=True,
                      **dict(FAST, image_size=32))
    chroma = lambda t: t.float()[:, :2] - t.float()[:, 1:]   # R-G and G-B
    unclipped = (y > 0).all(1, keepdim=True) & (y < 255).all(1, keepdim=True)
    diff = (chroma(y) - chroma(x)).abs()[unclipped.expand(-1, 2, -1, -1)]
    assert diff.mean() < 1.0 and (y.float() - x.float()).abs().mean() > 8


def test_bad_encoder_weights_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="do not exist"):
        style.build_encoder(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    torch.save({"0.weight": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="vgg19"):
        style.build_encoder(str(bad))


def run_embed(tmp_path, *extra):
    args = embed_features.get_parser().parse_args(
        ["--preset", "smoke", "--steps", "2", "--data-dir", str(tmp_path), *extra])
    return embed_features.main(args)


def test_embed_features_layout_and_index(tmp_path, capsys):
    out = run_embed(tmp_path, "--preview")
    p = get_preset("smoke")
    assert os.path.basename(out) == "fmnist_seurat_10%"
    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)
    n_train = round(0.1 * p["split"]["victim"])
    assert len(index["train_indices"]) == n_train and len(index["test_indices"]) == p["styled_test"]
    assert index["style"]["steps"] == 2 and index["dataset"] == "fmnist" and index["encoder"].startswith("random")
    assert os.path.exists(os.path.join(out, "preview.png"))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]

    ds = data.load_dataset("fmnist", str(tmp_path))
    victim = data.split_indices(len(ds["train"]), p["split"], 0)["victim"]
    train = data.load_styled(str(tmp_path), "fmnist", 0.1, "train")
    test = data.load_styled(str(tmp_path), "fmnist", 0.1, "test")
    assert sorted(train.idx.tolist()) == index["train_indices"] and len(test) == p["styled_test"]
    assert set(train.idx.tolist()) <= set(victim.tolist())           # only the victim's images
    assert torch.equal(train.y, ds["train"].y[train.idx])             # labels kept
    assert torch.equal(test.y, ds["test"].y[test.idx])
    assert not torch.equal(train.x, ds["train"].x[train.idx])         # restyled
    assert train.x.shape[1:] == (1, 28, 28)

    capsys.readouterr()
    run_embed(tmp_path)
    assert "up to date" in capsys.readouterr().out
    run_embed(tmp_path, "--steps", "1")                               # other settings: redone
    with open(os.path.join(out, "index.json")) as f:
        assert json.load(f)["style"]["steps"] == 1


def test_embed_features_dataset_must_match_preset(tmp_path):
    with pytest.raises(UserError, match="disagrees"):
        run_embed(tmp_path, "--dataset", "cifar10")
