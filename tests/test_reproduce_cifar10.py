"""reproduce.py --preset cifar10 --scale 0.01 end to end on fake CIFAR-format data.

It checks the wiring of the paper-scale preset, not its accuracy (the images are noise): CIFAR-10 read
from the reference folder layout, colour style transfer, WRN-28-10 victims and WRN-16-1 attackers,
every attack, both gradient dimensions, both meta-classifiers, verification. No internet: torchvision's
cifar-10-batches-py cannot be faked (its files are checked against their md5 sums), so the images are
written as data/cifar10/{train,test}/<class>/<index>.png, which ownership/data.py reads first.

The training set holds exactly the scaled splits (300 + 150 + 50 images at 0.01) and the test set
1000 images (10 clean evaluation images at 0.01, 10 stylised ones), the least the preset needs.
It is still slow, hence the `slow` marker (it runs by default; deselect it with -m 'not slow'): on the
2-core CPU this was written on it took 941 s with other jobs running (load average 2.9-3.7) and 969
CPU-seconds (not measured alone; those CPU-seconds include OpenMP threads spinning under contention,
but still point to well over 4 minutes). Stage times of that run: train 465 s, steal 354 s,
gradients 37 s, clf 61 s, verify 18 s. WRN-28-10 is what costs: 7 trainings on 50-300 images, the
victim queried by every attack, 4 gradient sets, and each model evaluated.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ownership import data
from ownership.constants import ACCESSES
from ownership.errors import UserError
from ownership.presets import PRESETS, get_preset

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fake_cifar(data_dir, n_train, n_test, seed=0):
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        y = torch.arange(n) % 10  # every class present in both splits
        data.write_folder(os.path.join(data_dir, "cifar10", split), data.ImageSet(x, y, CIFAR10))


def test_get_preset_scale():
    for name in PRESETS:
        assert get_preset(name) == dict(PRESETS[name], name=name, scale=1.0)
    p = get_preset("cifar10", 0.1)
    assert p["split"] == {"victim": 3000, "attacker": 1500, "independent": 500} and p["styled_test"] == 100
    assert p["eval_test"] == 0.1 and p["train"]["epochs"] == 5 and p["attacks"]["fine-tune"]["epochs"] == 1
    assert (p["attacks"]["zero-shot"]["iterations"], p["attacks"]["zero-shot"]["batch"]) == (800, 13)
    tiny = get_preset("smoke", 0.001)  # the floors
    assert tiny["split"] == {"victim": 100, "attacker": 50, "independent": 50}
    assert tiny["m"]["white-box"] == 100  # the floor of the stylised test pool: the largest column's m
    assert (tiny["styled_test"], tiny["eval_test"], tiny["attacks"]["zero-shot"]["batch"]) == (100, 100, 8)
    assert get_preset("imagenet", 0.5)["split"] == {"victim": 0.3, "attacker": 0.15, "independent": 0.05}
    assert get_preset("fmnist", 2)["split"] == PRESETS["fmnist"]["split"]  # more data than there is: no
    with pytest.raises(UserError):
        get_preset("cifar10", 0)


@pytest.mark.slow
def test_cifar10_preset_end_to_end(repo, tmp_path):
    preset = get_preset("cifar10", 0.01)
    assert preset["split"] == {"victim": 300, "attacker": 150, "independent": 50}
    assert preset["attacks"]["zero-shot"]["iterations"] == 8 and preset["styled_test"] == preset["m"] == 10
    work = tmp_path / "work"
    fake_cifar(str(work / "data"), sum(preset["split"].values()), 1000)
    cmd = [sys.executable, os.path.join(repo, "reproduce.py"), "--preset", "cifar10", "--scale", "0.01",
           "--workdir", str(work), "--out", str(tmp_path / "results")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "results" / "results.json") as f:
        res = json.load(f)
    assert res["preset"] == "cifar10" and res["scale"] == 0.01
    assert [(row["mode"], row["arch"]) for row in res["rows"]] == [
        ("source", "wrn28-10"), ("distillation", "wrn16-1"), ("zero-shot", "wrn16-1"), ("fine-tune", "wrn28-10"),
        ("label-query", "wrn16-1"), ("logit-query", "wrn16-1"), ("multi-stage", "wrn16-1"),
        ("label-query (natural)", "wrn16-1"), ("logit-query (natural)", "wrn16-1"),
        ("independent", "wrn16-1"), ("independent", "wrn28-10")]
    for row in res["rows"]:
        assert all(0 <= row[a]["p_value"] <= 1 for a in ACCESSES), row
    assert {(a, k) for a, c in res["classifiers"].items() for k in c} == {(a, k) for a in ("wrn28-10", "wrn16-1")
                                                                          for k in ACCESSES}
    classifiers = [(k, c) for by_access in res["classifiers"].values() for k, c in by_access.items()]
    # the scaled preset reached every stage: 30 stylised training images (gamma of 300), 10 test images
    styled = work / "data" / "cifar10_seurat_10%"
    with open(styled / "index.json") as f:
        index = json.load(f)
    assert len(index["train_indices"]) == 30 and len(index["test_indices"]) == 10
    assert index["style"]["steps"] == 2 and index["style"]["image_size"] == 64 and not index["style"]["luminance"]
    for arch, dim in (("wrn28-10", 5178), ("wrn16-1", 22192)):
        g = np.load(work / "gradients_set" / f"vict-{arch}.pt" / "cifar10_seurat_10%" / "g_f.npy")
        assert g.shape == (30, dim) and g.dtype == np.int8
        clf = torch.load(work / "model" / "clf" / f"gradsign-cifar10-{arch}.pt", weights_only=True)
        assert clf["d"] == dim and clf["n_train"] + clf["n_test"] == 6 * 30  # 2 victim-like + 4 benign models
    # 4 held-out references per architecture, none behind a classifier; the black-box classifier is the
    # one over both architectures (the preset's black_box="any-arch"), with the weak models and simulated thefts too
    for access, c in classifiers:
        archs = 2 if access == "black-box" else 1
        names = lambda paths: {os.path.basename(x) for x in paths}  # noqa: E731
        assert len(c["references"]) == 4 * archs and not names(c["references"]) & names(c["trained_on"]["neg"])
        n_weak = len(PRESETS["cifar10"]["clf_models"]["weak"]) * archs  # trained a little, or not at all
        n_theft = len(PRESETS["cifar10"]["clf_models"]["thefts"]) * archs  # simulated thefts of a benign model
        assert len(c["trained_on"]["neg"]) == (8 + n_weak + n_theft if access == "black-box" else 4), access
        assert sum("-weak" in x for x in c["trained_on"]["neg"]) == (n_weak if access == "black-box" else 0), access
        assert (c["path"] == "model/clf/blackbox-cifar10.pt") == (access == "black-box"), c["path"]
    vict = torch.load(work / "model" / "victim" / "vict-wrn28-10.pt", weights_only=True)
    assert vict["preset"]["name"] == "cifar10" and vict["train"]["epochs"] == 1
    assert vict["metrics"]["train_images"] == 300
    zs = torch.load(work / "model" / "attack" / "atta-df-wrn16-1.pt", weights_only=True)
    assert zs["attack"]["iterations"] == 8
