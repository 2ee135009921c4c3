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
