"""torchrun with 2 CPU processes (gloo): training produces a normal checkpoint."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import fake_styled
from ownership.checkpoints import load_model
from ownership.data import role_data
from ownership.presets import get_preset
from ownership.training import accuracy


def test_two_process_training(repo, tmp_path):
    dd = str(tmp_path / "data")
    fake_styled(dd)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(repo, "train_model.py"), "--role", "victim", "--preset", "smoke", "--arch", "wrn10-1",
           "--epochs", "1", f"--data-dir={dd}", f"--model-dir={tmp_path}/model"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    path = tmp_path / "model" / "victim" / "vict-wrn10-1.pt"
    model, ck = load_model(str(path))
    assert ck["world_size"] == 2 and ck["arch"] == "wrn10-1"
    assert set(ck) >= {"state_dict", "arch", "num_classes", "in_channels", "preset", "metrics"}
    acc = accuracy(model, role_data(get_preset("smoke"), dd, 0, "test"), "fmnist")
    assert acc == pytest.approx(ck["metrics"]["clean_acc"])
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    assert not os.path.exists(str(path) + ".state")


# the fmnist default's feature in the fast run; the paper's and the input gradient (about 20 s each on a
# 2-core CPU) with the slow tests, which CI runs too
@pytest.mark.parametrize("feature,dim,dtype,stem", [
    pytest.param("weight-signs", 11408, "int8", "g_f", marks=pytest.mark.slow),
    pytest.param("input-gradient", 786, "float32", "g_x", marks=pytest.mark.slow),
    ("stylised-loss", 1, "float32", "g_l")])
def test_two_process_gradient_set_equals_one_process(repo, tmp_path, feature, dim, dtype, stem):
    """gradientset.py under torchrun (2 ranks, gloo) writes the same bytes as one process. 300 images
    at batch 64 make 3 units of 128 (shard_rows): rank 0 takes two, rank 1 one, so rank 1 must skip
    the first two blocks' augmentation draws to match (weight signs, with the transform), and send its
    float rows and read its originals' shard (input gradients), or its float rows alone (stylised
    log-losses)."""
    import numpy as np
    from network import get_model
    from ownership import checkpoints, data, paths
    dd_, md = str(tmp_path / "data"), str(tmp_path / "model")
    train = data.load_dataset("fmnist", dd_)["train"].subset(range(300))
    data.write_folder(os.path.join(paths.styled_dir(dd_, "fmnist"), "train"),
                      data.ImageSet(255 - train.x, train.y, train.classes, train.idx))
    torch.manual_seed(0)
    ck = str(tmp_path / "m.pt")
    checkpoints.save_checkpoint(ck, checkpoints.model_record(get_model("wrn10-1", 10, 1), "wrn10-1", 10, 1, "fmnist"))
    outs = {}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for name, launch in (("one", [sys.executable]), ("two", torchrun)):
        out = str(tmp_path / name / f"{stem}.npy")
        # --model_root, not its alias --m: torchrun's own parser rejects --m as an ambiguous prefix of its
        # options (--module, --master-addr ...) even after the script name
        r = subprocess.run(launch + [os.path.join(repo, "gradientset.py"), f"--model_root={ck}", "--dataset=fmnist",
                                     "--batch_size=64", f"--gradientset_path={out}", f"--data-dir={dd_}",
                                     f"--model-dir={md}", f"--feature={feature}"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count("wrote ") == 1  # rank 0 alone reports (and writes)
        assert sorted(os.listdir(tmp_path / name)) == [f"{stem}.json", f"{stem}.npy"]  # no temporary file left
        outs[name] = out
    g = np.load(outs["one"])
    assert g.shape == (300, dim) and g.dtype == np.dtype(dtype) and np.isfinite(g).all()
    assert open(outs["one"], "rb").read() == open(outs["two"], "rb").read()
