"""The three reference scripts through their command lines, on two tiny models trained here."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from network import get_model
from ownership import checkpoints, data, paths, training
from ownership.presets import PRESETS


def run(repo, script, *args, check=True):
    r = subprocess.run([sys.executable, os.path.join(repo, script), *args], capture_output=True, text=True,
                       cwd="/", timeout=600)  # from another working directory on purpose
    if check and r.returncode != 0:
        raise AssertionError(f"{script} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Tiny victim (trained with inverted copies of 15 % of its images: a crude external feature),
    benign model and held-out benign reference, on 600 Fashion-MNIST images."""
    root = tmp_path_factory.mktemp("ref")
    dd, md = str(root / "data"), str(root / "model")
    ds = data.load_dataset("fmnist", dd)
    tr, te = ds["train"].subset(range(600)), ds["test"].subset(range(120))
    feat = lambda s: data.ImageSet(255 - s.x, s.y, s.classes, s.idx)  # noqa: E731
    styled = paths.styled_dir(dd, "fmnist")
    data.write_folder(os.path.join(styled, "train"), feat(tr.subset(range(90))))
    data.write_folder(os.path.join(styled, "test"), feat(te))
    mixed = data.ImageSet.cat(tr.subset(range(90, 600)), feat(tr.subset(range(90))))
    for name, images, seed in (("victim", mixed, 1), ("benign", tr, 2), ("ref", tr, 3)):
        torch.manual_seed(seed)
        model = get_model("wrn10-1", 10, 1)
        training.train(model, images, "fmnist", epochs=2, lr=0.05, batch=50, seed=seed)
        path = {"victim": paths.victim(md, "wrn10-1"), "benign": paths.benign(md, "wrn10-1"),
                "ref": paths.benign(md, "wrn10-1", "-ref")}[name]
        checkpoints.save_checkpoint(path, checkpoints.model_record(model, "wrn10-1", 10, 1, "fmnist"))
    return root


def dirs(root):
    return [f"--data-dir={root}/data", f"--model-dir={root}/model", f"--grad-dir={root}/gradients_set",
            f"--prob-dir={root}/prob"]


def test_help_shows_reference_flags(repo):
    for script, flags in (("gradientset.py", ["--model", "--m", "--dataset", "--num_classes", "--gpu", "--seed",
                                              "--gradientset_path", "--batch_size"]),
                          ("train_clf.py", ["--type", "--model_type", "--dataset", "--gpu", "--seed", "--mlp_epoch",
                                            "--lr", "--batch_size"]),
                          ("ownership_verification.py", ["--mode", "--dataset", "--gpu", "--seed", "--s", "--b", "--c",
                                                         "--suspicious_model_root", "--benign_model_root",
                                                         "--clf_root", "--m", "--tau", "--test"])):
        out = importlib.import_module(script[:-3]).get_parser().format_help()  # what --help prints
        for f in flags:
            assert f in out, f"{script} --help lacks {f}"


@pytest.mark.slow  # trains and verifies through every reference command (about 35 s)
def test_reference_chain(repo, workdir):
    root = str(workdir)
    for model in ("victim/vict-wrn10-1.pt", "benign/benign-wrn10-1.pt"):
        folder = f"{root}/gradients_set/{os.path.basename(model)}/fmnist_seurat_10%"
        # the paper's weight signs, asked for by name
        run(repo, "gradientset.py", "--model=wrn10-1", f"--m={root}/model/{model}", "--dataset=fmnist",
            "--feature=weight-signs", "--gpu=0", "--batch_size=32", *dirs(root))
        g = np.load(f"{folder}/g_f.npy")
        assert g.shape == (90, 11408) and g.dtype == np.int8 and set(np.unique(g)) <= {-1, 0, 1}
        # input gradients, asked for by name
        run(repo, "gradientset.py", "--model=wrn10-1", f"--m={root}/model/{model}", "--dataset=fmnist",
            "--feature=input-gradient", "--gpu=0", "--batch_size=32", *dirs(root))
        g = np.load(f"{folder}/g_x.npy")
        assert g.shape == (90, 786) and g.dtype == np.float32 and np.isfinite(g).all()
        assert json.load(open(f"{folder}/g_x.json"))["augment"] is False
        # the reference command verbatim: the fmnist preset's features, the stylised log-loss, no transform
        run(repo, "gradientset.py", "--model=wrn10-1", f"--m={root}/model/{model}", "--dataset=fmnist",
            "--gpu=0", "--batch_size=32", *dirs(root))
        loss = np.load(f"{folder}/g_l.npy")
        assert loss.shape == (90, 1) and loss.dtype == np.float32
        np.testing.assert_array_equal(loss[:, 0], g[:, 784])  # the input-gradient features' stylised-loss column
        assert json.load(open(f"{folder}/g_l.json"))["feature"] == "stylised-loss"
    r = run(repo, "train_clf.py", "--type=wrn10-1", "--dataset=fmnist", "--mlp_epoch=10", "--gpu=0", *dirs(root))
    assert "held-out accuracy" in r.stdout
    ck = torch.load(f"{root}/model/clf/gradsign-fmnist-wrn10-1.pt", weights_only=True)
    assert ck["mean"].shape == (1,) and ck["std"].shape == (1,)  # stored for verification
    assert ck["feature"] == "stylised-loss" and ck["augment"] is False and ck["l2"] is False
    for mode, suspect in (("source", "victim/vict-wrn10-1.pt"), ("benign", "benign/benign-wrn10-1.pt")):
        r = run(repo, "ownership_verification.py", f"--mode={mode}", "--dataset=fmnist", "--gpu=0",
                f"--s={root}/model/{suspect}", *dirs(root))
        lines = r.stdout.strip().splitlines()
        assert lines[0].startswith("result:  p-val: ") and " mu: " in lines[0]
        p, mu = float(lines[0].split()[2]), float(lines[0].split()[4])
        info = json.loads(lines[1])
        assert info["p_value"] == p and info["delta_mu"] == mu and info["m"] == PRESETS["fmnist"]["m"]["white-box"]  # the preset's
        assert info["references"][0].endswith("benign-wrn10-1-ref.pt")  # the held-out reference by default
        assert info["probabilities"] == f"{root}/prob/fmnist/suspect-{os.path.basename(suspect)}.npz"  # its own file
        probs = np.load(info["probabilities"])
        assert probs["p_suspect"].shape == (120,)
    r = run(repo, "ownership_verification.py", "--mode=source", "--test=reference", f"--s={root}/model/victim/vict-wrn10-1.pt",
            *dirs(root))
    assert json.loads(r.stdout.splitlines()[1])["draws"] == 40


def test_suspect_equal_to_reference_is_refused(repo, workdir):
    root = str(workdir)
    r = run(repo, "ownership_verification.py", "--mode=benign", f"--s={root}/model/benign/benign-wrn10-1-ref.pt",
            *dirs(root), check=False)
    assert r.returncode == 2 and "same file" in r.stderr and "Traceback" not in r.stderr
