"""The query thieves' surrogate natural images (ownership/natural_images.py) and their data role."""
import pytest
import torch

from ownership import presets
from ownership.data import role_data, split_indices, load_dataset
from ownership.errors import UserError
from ownership.natural_images import SAMPLE_PHOTOGRAPHS, natural_images


def test_natural_images_shape_range_and_seed():
    a = natural_images(64, 28, 1, seed=3)
    assert a.shape == (64, 1, 28, 28) and a.dtype == torch.uint8
    assert torch.equal(a, natural_images(64, 28, 1, seed=3))       # one seed, one set
    assert not torch.equal(a, natural_images(64, 28, 1, seed=4))
    assert a.float().std() > 20                                    # photographs, not a flat fill
    assert len({bytes(x.numpy()) for x in a}) == 64                # every crop differs
    rgb = natural_images(8, 32, 3, seed=3)
    assert rgb.shape == (8, 3, 32, 32)
    assert (rgb[:, 0] != rgb[:, 1]).any()                          # colour photographs keep their colour


def test_sample_photographs_are_bundled():
    from skimage import data as skdata
    for name in SAMPLE_PHOTOGRAPHS:  # every one reads a file of the wheel: no download
        assert getattr(skdata, name)().size > 10_000


def test_natural_role_has_the_attackers_count_and_no_labels(tmp_path):
    p = presets.get_preset("smoke")
    q = role_data(p, str(tmp_path), 0, "natural")
    n = len(split_indices(len(load_dataset("fmnist", str(tmp_path))["train"]), p["split"], 0)["attacker"])
    assert len(q) == n and q.x.shape[1:] == (1, 28, 28)
    assert (q.y == -1).all()  # the victim labels them


def test_query_data_preset_is_validated(monkeypatch):
    monkeypatch.setitem(presets.PRESETS["smoke"], "query_data", ("natural", "tinyimages"))
    with pytest.raises(UserError, match="attacker, natural"):
        presets.get_preset("smoke")
    monkeypatch.setitem(presets.PRESETS["smoke"], "query_data", ())
    with pytest.raises(UserError, match="query_data"):
        presets.get_preset("smoke")


def test_natural_images_refuse_zero():
    with pytest.raises(UserError, match="at least one"):
        natural_images(0, 28, 1, seed=0)
