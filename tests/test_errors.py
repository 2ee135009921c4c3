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
from ownership import checkpoints, cli, data, metaclf, paths
from ownership.errors import UserError


def run(repo, script, *args):
    return subprocess.run([sys.executable, os.path.join(repo, script), *args], capture_output=True, text=True,
                          timeout=300)


def call(script, *args):
    """Run `script`'s main in this process through cli.run, exactly as its __main__ does, without the
    interpreter start-up of `run` (seconds on a busy 2-core machine): returncode, stderr, result."""
    import contextlib
    import importlib
    import io
    import types
    module = importlib.import_module(script[:-3])
    err, code, result = io.StringIO(), 0, None
    with contextlib.redirect_stderr(err):
        try:
            result = cli.run(module.main, module.get_parser(), list(args))
        except SystemExit as e:
            code = e.code
    return types.SimpleNamespace(returncode=code, stderr=err.getvalue(), result=result)


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
    fails(call("ownership_verification.py", f"--s={evil}", *w["dirs"]), "evil.pt", "refused")
    fails(call("gradientset.py", f"--m={evil}", *w["dirs"]), "refused")
    assert not os.path.exists(marker)


def test_plain_pickle_is_refused(w):
    path = str(w["root"] / "plain.pkl")
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}}, f)
    with pytest.raises(UserError):
        checkpoints.load_checkpoint(path)


def test_missing_files_name_the_command(w, repo):
    fails(call("gradientset.py", "--m=/nonexistent/vict.pt", *w["dirs"]), "/nonexistent/vict.pt", "does not exist")
    fails(call("ownership_verification.py", f"--s={w['good']}", "--c=/nope/clf.pt", *w["dirs"]),
          "/nope/clf.pt", "train_clf.py")
    fails(call("train_clf.py", "--type=wrn10-1", *w["dirs"]), "g_l.npy", "gradientset.py")  # fmnist's features
    fails(call("train_clf.py", "--access=black-box", "--feature=stylised-loss", *w["dirs"]),
          "--feature stylised-loss is not a black-box feature", "prediction-shift, shift-true-label")
    fails(call("train_clf.py", "--type=wrn10-1", "--feature=shift-true-label", *w["dirs"]),
          "not a white-box feature", "stylised-loss")
    fails(call("gradientset.py", f"--m={w['good']}", f"--data-dir={w['root']}/empty"), "embed_features.py")
    fails(call("ownership_verification.py", "--mode=distillation", *w["dirs"]), "reproduce.py")


def test_truncated_checkpoint(w, repo):
    bad = str(w["root"] / "trunc.pt")
    with open(w["good"], "rb") as f:
        blob = f.read()
    with open(bad, "wb") as f:
        f.write(blob[: len(blob) // 2])
    # a real process: exit code 2 and one line, no traceback, from the interpreter itself
    fails(run(repo, "gradientset.py", f"--m={bad}", *w["dirs"]), "trunc.pt", "truncated or corrupt")


def test_architecture_mismatch(w, repo):
    fails(call("gradientset.py", "--model=wrn10-2", f"--m={w['good']}", *w["dirs"]), "arch=wrn10-1", "--model")


def test_num_classes_mismatch(w, repo):
    fails(call("gradientset.py", "--num_classes=20", f"--m={w['good']}", *w["dirs"]), "num_classes")


def broken(w, name, value):
    """A copy of the good checkpoint with every fc weight set to `value`."""
    ck = torch.load(w["good"], weights_only=True)
    ck["state_dict"]["fc.weight"][:] = value
    path = str(w["root"] / name)
    torch.save(ck, path)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_weights(w, value):
    bad = broken(w, f"w{value}.pt", value)
    fails(call("gradientset.py", f"--m={bad}", *w["dirs"]), f"w{value}.pt", "NaN or Inf in its weights",
          "fc.weight")


def test_overflowing_gradients_and_predictions(w, tmp_path):
    """Finite weights so large that the logits overflow: caught where gradients (white-box) and
    predictions (black-box) are made."""
    huge = broken(w, "huge.pt", 1e38)
    fails(call("gradientset.py", f"--m={huge}", *w["dirs"]), "NaN or Inf in the model's white-box features", "huge.pt")
    rng = np.random.default_rng(0)
    ck = metaclf.fit([rng.normal(size=(20, 40))], [rng.normal(size=(20, 40))], epochs=1)
    ck.update(arch="wrn10-1", kind="black-box", views=4)
    bb = str(tmp_path / "bb.pt")
    checkpoints.save_checkpoint(bb, ck)
    fails(call("ownership_verification.py", f"--s={huge}", f"--c={bb}", *w["dirs"]),
          "NaN or Inf in the model's predictions")


def test_nan_probabilities(w, tmp_path):
    ck = torch.load(paths.clf(w["md"], "fmnist", "wrn10-1"), weights_only=True)
    next(iter(ck["state_dict"].values()))[:] = float("inf")
    clf = str(tmp_path / "clf.pt")
    checkpoints.save_checkpoint(clf, ck)
    fails(call("ownership_verification.py", f"--s={w['good']}", f"--c={clf}", *w["dirs"]),
          "NaN or Inf in the meta-classifier's probabilities", "train_clf.py --type=wrn10-1")


def test_m_larger_than_images(w, repo):
    fails(call("ownership_verification.py", f"--s={w['good']}", "--b=" + paths.benign(w["md"], "wrn10-1", "-ref"),
              "--m=500", *w["dirs"]), "--m 500", "20")


def test_steal_flags_of_other_modes(w):
    """The simulated thefts' flags are refused where a mode would ignore them, before anything loads."""
    fails(call("steal.py", "--mode=distillation", f"--student={w['good']}", *w["dirs"]), "--student", "multi-stage")
    fails(call("steal.py", "--mode=zero-shot", "--fine-tune-data=victim-clean", *w["dirs"]), "--fine-tune-data",
          "zero-shot")


def test_unknown_names(repo):
    fails(call("ownership_verification.py", "--mode=telepathy"), "--mode", "telepathy")
    fails(call("gradientset.py", "--m=x.pt", "--dataset=mnist"), "--dataset", "mnist")
    fails(call("gradientset.py", "--m=x.pt", "--model=resnet1000"), "--model", "resnet1000")


def test_empty_class_folder(w, repo, tmp_path):
    dd = tmp_path / "data"
    styled = paths.styled_dir(str(dd), "fmnist")
    data.write_folder(os.path.join(styled, "train"), data.load_dataset("fmnist", w["dd"])["train"].subset(range(5)))
    cls = sorted(d for d in os.listdir(os.path.join(styled, "train")) if not d.endswith(".txt"))[0]
    for f in os.listdir(os.path.join(styled, "train", cls)):
        os.remove(os.path.join(styled, "train", cls, f))
    fails(call("gradientset.py", f"--m={w['good']}", f"--data-dir={dd}"), cls, "empty")


def test_wrong_image_size(w, repo, tmp_path):
    dd = tmp_path / "data"
    styled = paths.styled_dir(str(dd), "fmnist")
    data.write_folder(os.path.join(styled, "train"), data.load_dataset("fmnist", w["dd"])["train"].subset(range(5)))
    cls = sorted(d for d in os.listdir(os.path.join(styled, "train")) if not d.endswith(".txt"))[0]
    Image.new("RGB", (32, 32)).save(os.path.join(styled, "train", cls, "999999.png"))
    fails(call("gradientset.py", f"--m={w['good']}", f"--data-dir={dd}"), "999999.png", "28x28 L")


def test_wrong_image_mode(w, tmp_path):
    dd = tmp_path / "data"
    styled = paths.styled_dir(str(dd), "fmnist")
    data.write_folder(os.path.join(styled, "train"), data.load_dataset("fmnist", w["dd"])["train"].subset(range(5)))
    cls = sorted(d for d in os.listdir(os.path.join(styled, "train")) if not d.endswith(".txt"))[0]
    Image.new("RGB", (28, 28)).save(os.path.join(styled, "train", cls, "999999.png"))
    fails(call("gradientset.py", f"--m={w['good']}", f"--data-dir={dd}"), "999999.png", "28x28 RGB", "28x28 L")


def test_unbalanced_class_folder(w, tmp_path):
    """300 images (30 per class on average), then one class cut down to 2: a half-copied folder."""
    dd = tmp_path / "data"
    train = os.path.join(paths.styled_dir(str(dd), "fmnist"), "train")
    data.write_folder(train, data.load_dataset("fmnist", w["dd"])["train"].subset(range(300)))
    data.read_folder(train, 1, 28)  # balanced enough as written
    cls = sorted(d for d in os.listdir(train) if not d.endswith(".txt"))[3]
    for f in sorted(os.listdir(os.path.join(train, cls)))[2:]:
        os.remove(os.path.join(train, cls, f))
    fails(call("gradientset.py", f"--m={w['good']}", f"--data-dir={dd}"), cls, "holds 2 images", "unbalanced")


def test_gpu_without_cuda_warns_and_runs(w, repo):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    r = run(repo, "gradientset.py", f"--m={w['good']}", "--gpu=0", *w["dirs"])  # the warning, once per process
    assert r.returncode == 0 and "no CUDA device" in r.stderr


# ----------------------------------------------------------------------------- .safetensors suspects
@pytest.fixture(scope="module")
def st_suspect(w):
    """Another untrained wrn10-1 as a .pt checkpoint and as .safetensors files: a bare one (the
    architecture must come from --model) and one whose metadata records it."""
    from safetensors.torch import save_file
    torch.manual_seed(1)
    model = get_model("wrn10-1", 10, 1)
    pt = str(w["root"] / "suspect.pt")
    checkpoints.save_checkpoint(pt, checkpoints.model_record(model, "wrn10-1", 10, 1, "fmnist"))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    bare, meta = str(w["root"] / "suspect.safetensors"), str(w["root"] / "suspect-meta.safetensors")
    save_file(sd, bare)
    save_file(sd, meta, metadata={"arch": "wrn10-1", "num_classes": "10", "in_channels": "1"})
    return pt, bare, meta


def test_safetensors_suspect_same_gradient_set(w, st_suspect, tmp_path):
    from ownership import gradient_sets
    from ownership.presets import get_preset
    pt, bare, meta = st_suspect
    wb = get_preset("fmnist")["white_box"]  # gradientset.py's defaults on fmnist
    want = np.load(gradient_sets.collect(pt, "fmnist", w["dd"], str(tmp_path / "g"), augment=wb["augment"],
                                         feature=wb["feature"]))
    for path, flags in ((bare, ["--model=wrn10-1"]), (meta, [])):
        out = str(tmp_path / (os.path.basename(path) + ".npy"))
        r = call("gradientset.py", f"--m={path}", *flags, f"--gradientset_path={out}", *w["dirs"])
        assert r.returncode == 0, r.stderr[-1500:]
        assert np.array_equal(np.load(out), want), path
    fails(call("gradientset.py", f"--m={bare}", *w["dirs"]), "suspect.safetensors", "--model")


def test_safetensors_suspect_same_verdict(w, st_suspect):
    pt, bare, _ = st_suspect
    ref = "--b=" + paths.benign(w["md"], "wrn10-1", "-ref")
    results = []
    for flags in ([f"--s={pt}"], [f"--s={bare}", "--model=wrn10-1"]):
        r = call("ownership_verification.py", *flags, ref, "--m=5", *w["dirs"])
        assert r.returncode == 0, r.stderr[-1500:]
        results.append(r.result)
    assert (results[0]["p_value"], results[0]["delta_mu"]) == (results[1]["p_value"], results[1]["delta_mu"])


def test_safetensors_wrong_architecture(w, st_suspect):
    _, bare, meta = st_suspect
    fails(call("gradientset.py", f"--m={bare}", "--model=wrn10-2", *w["dirs"]),
          "suspect.safetensors", "do not fit wrn10-2", "--model")
    fails(call("ownership_verification.py", f"--s={meta}", "--model=wrn10-2", *w["dirs"]),
          "arch=wrn10-1", "--model wrn10-1")


def test_truncated_safetensors(w, st_suspect):
    bad = str(w["root"] / "trunc.safetensors")
    with open(st_suspect[1], "rb") as f:
        blob = f.read()
    with open(bad, "wb") as f:
        f.write(blob[: len(blob) // 2])
    fails(call("gradientset.py", f"--m={bad}", "--model=wrn10-1", *w["dirs"]), "trunc.safetensors",
          "truncated or corrupt")


def test_results_are_never_overwritten(w, tmp_path):
    """An explicit suspect gets its own probabilities file (never the victim's <mode>.npz) and a JSON
    without a mode it is not; another suspect of the same file name is refused without --force."""
    import shutil
    prob, md = tmp_path / "prob", tmp_path / "model"
    shutil.copytree(w["md"], md)
    shutil.copy(w["good"], paths.victim(str(md), "wrn16-1"))  # the fmnist victim's file name (a wrn10-1 inside)
    dirs = [d for d in w["dirs"] if not d.startswith(("--prob-dir", "--model-dir"))] + [f"--prob-dir={prob}",
                                                                                          f"--model-dir={md}"]
    ref = "--b=" + paths.benign(str(md), "wrn10-1", "-ref")
    source = call("ownership_verification.py", "--m=5", ref, *dirs)
    assert source.returncode == 0 and source.result["mode"] == "source", source.stderr[-800:]
    a, b = tmp_path / "a" / "s.pt", tmp_path / "b" / "s.pt"
    for f in (a, b):
        os.makedirs(f.parent)
        shutil.copy(w["good"], f)
    first = call("ownership_verification.py", f"--s={a}", "--m=5", ref, *dirs)
    assert first.returncode == 0 and first.result["mode"] is None
    assert first.result["probabilities"].endswith("suspect-s.pt.npz")
    assert str(np.load(source.result["probabilities"])["suspect"]) == paths.victim(str(md), "wrn16-1")  # untouched
    again = call("ownership_verification.py", f"--s={a}", "--m=5", ref, *dirs)  # the same suspect: a rerun
    assert again.returncode == 0
    fails(call("ownership_verification.py", f"--s={b}", "--m=5", ref, *dirs), "holds the results of", "--force")
    forced = call("ownership_verification.py", f"--s={b}", "--m=5", ref, "--force", *dirs)
    assert forced.returncode == 0 and str(np.load(forced.result["probabilities"])["suspect"]) == str(b)
