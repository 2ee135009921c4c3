"""Bad input ends in one line on stderr naming the file or value and the fix, exit code 2, no traceback;
a malicious checkpoint is refused without running its code."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from network import get_model
from ownership import checkpoints, data, metaclf, paths
from ownership.cli import UserError


def run(repo, script, *args):
    return subprocess.run([sys.executable, os.path.join(repo, script), *args], capture_output=True, text=True,
                          timeout=300)


def fails(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr, r.stderr[-1500:]
    last = r.stderr.strip().splitlines()[-1].split("\r")[-1]
    for n in needles:
        assert n in last, last
    return last


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """An untrained wrn10-1 checkpoint, a tiny transformed set and a meta-classifier of the right size."""
    root = tmp_path_factory.mktemp("err")
    dd, md = str(root / "data"), str(root / "model")
    ds = data.load_dataset("fmnist", dd)
    styled = paths.styled_dir(dd, "fmnist")
    data.write_folder(os.path.join(styled, "train"), ds["train"].subset(range(20)))
    data.write_folder(os.path.join(styled, "test"), ds["test"].subset(range(20)))
    torch.manual_seed(0)
    model = get_model("wrn10-1", 10, 1)
    good = paths.victim(md, "wrn10-1")
    checkpoints.save_checkpoint(good, checkpoints.model_record(model, "wrn10-1", 10, 1, "fmnist"))
    checkpoints.save_checkpoint(paths.benign(md, "wrn10-1", "-ref"),
                                checkpoints.model_record(model, "wrn10-1", 10, 1, "fmnist"))
    rng = np.random.default_rng(0)
    ck = metaclf.fit([np.sign(rng.normal(size=(20, 11408)))], [np.sign(rng.normal(size=(20, 11408)))], epochs=1)
    ck["arch"] = "wrn10-1"
    checkpoints.save_checkpoint(paths.clf(md, "fmnist", "wrn10-1"), ck)
    return dict(root=root, dd=dd, md=md, good=good, styled=styled,
                dirs=[f"--data-dir={dd}", f"--model-dir={md}", f"--grad-dir={root}/g", f"--prob-dir={root}/p"])


class Evil:
    """Unpickling this writes a marker file: proof that code from the checkpoint ran."""
    marker = None

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused(w, repo):
    marker = str(w["root"] / "pwned")
    Evil.marker = marker
    evil = str(w["root"] / "evil.pt")
    torch.save({"state_dict": {}, "payload": Evil()}, evil)
    with pytest.raises(UserError, match="refused without running it"):
        checkpoints.load_checkpoint(evil)
    fails(run(repo, "ownership_verification.py", f"--s={evil}", *w["dirs"]), "evil.pt", "refused")
    fails(run(repo, "gradientset.py", f"--m={evil}", *w["dirs"]), "refused")
    assert not os.path.exists(marker)


def test_plain_pickle_is_refused(w):
    path = str(w["root"] / "plain.pkl")
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}}, f)
    with pytest.raises(UserError):
        checkpoints.load_checkpoint(path)


def test_missing_files_name_the_command(w, repo):
    fails(run(repo, "gradientset.py", "--m=/nonexistent/vict.pt", *w["dirs"]), "/nonexistent/vict.pt", "does not exist")
    fails(run(repo, "ownership_verification.py", f"--s={w['good']}", "--c=/nope/clf.pt", *w["dirs"]),
          "/nope/clf.pt", "train_clf.py")
    fails(run(repo, "train_clf.py", "--type=wrn10-1", *w["dirs"]), "g_f.npy", "gradientset.py")
    fails(run(repo, "gradientset.py", f"--m={w['good']}", f"--data-dir={w['root']}/empty"), "embed_features.py")
    fails(run(repo, "ownership_verification.py", "--mode=distillation", *w["dirs"]), "reproduce.py")


def test_truncated_checkpoint(w, repo):
    bad = str(w["root"] / "trunc.pt")
    with open(w["good"], "rb") as f:
        blob = f.read()
    with open(bad, "wb") as f:
        f.write(blob[: len(blob) // 2])
    fails(run(repo, "gradientset.py", f"--m={bad}", *w["dirs"]), "trunc.pt", "truncated or corrupt")


def test_architecture_mismatch(w, repo):
    fails(run(repo, "gradientset.py", "--model=wrn10-2", f"--m={w['good']}", *w["dirs"]), "arch=wrn10-1", "--model")


def test_num_classes_mismatch(w, repo):
    fails(run(repo, "gradientset.py", "--num_classes=20", f"--m={w['good']}", *w["dirs"]), "num_classes")


def test_nan_gradients(w, repo):
    ck = torch.load(w["good"], weights_only=True)
    ck["state_dict"]["fc.weight"][:] = float("nan")
    nan = str(w["root"] / "nan.pt")
    torch.save(ck, nan)
    fails(run(repo, "gradientset.py", f"--m={nan}", *w["dirs"]), "NaN")


def test_m_larger_than_images(w, repo):
    fails(run(repo, "ownership_verification.py", f"--s={w['good']}", "--b=" + paths.benign(w["md"], "wrn10-1", "-ref"),
              "--m=500", *w["dirs"]), "--m 500", "20")


def test_unknown_names(repo):
    fails(run(repo, "ownership_verification.py", "--mode=telepathy"), "--mode", "telepathy")
    fails(run(repo, "gradientset.py", "--m=x.pt", "--dataset=mnist"), "--dataset", "mnist")
    fails(run(repo, "gradientset.py", "--m=x.pt", "--model=resnet1000"), "--model", "resnet1000")


def test_empty_class_folder(w, repo, tmp_path):
    dd = tmp_path / "data"
    styled = paths.styled_dir(str(dd), "fmnist")
    data.write_folder(os.path.join(styled, "train"), data.load_dataset("fmnist", w["dd"])["train"].subset(range(5)))
    cls = sorted(d for d in os.listdir(os.path.join(styled, "train")) if not d.endswith(".txt"))[0]
    for f in os.listdir(os.path.join(styled, "train", cls)):
        os.remove(os.path.join(styled, "train", cls, f))
    fails(run(repo, "gradientset.py", f"--m={w['good']}", f"--data-dir={dd}"), cls, "empty")


def test_wrong_image_size(w, repo, tmp_path):
    dd = tmp_path / "data"
    styled = paths.styled_dir(str(dd), "fmnist")
    data.write_folder(os.path.join(styled, "train"), data.load_dataset("fmnist", w["dd"])["train"].subset(range(5)))
    cls = sorted(d for d in os.listdir(os.path.join(styled, "train")) if not d.endswith(".txt"))[0]
    Image.new("RGB", (32, 32)).save(os.path.join(styled, "train", cls, "999999.png"))
    fails(run(repo, "gradientset.py", f"--m={w['good']}", f"--data-dir={dd}"), "999999.png", "28x28 L")


def test_gpu_without_cuda_warns_and_runs(w, repo):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    r = run(repo, "gradientset.py", f"--m={w['good']}", "--gpu=0", *w["dirs"])
    assert r.returncode == 0 and "no CUDA device" in r.stderr
