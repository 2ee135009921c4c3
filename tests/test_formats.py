"""Suspects as they really arrive (issue 15): honest formats load and give the original verdict (the
same p); formats that cannot be read end in one line naming the file, what is wrong, and a fix.
Built on the tiny untrained wrn10-1 models of test_errors' fixture `w`."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ownership import checkpoints, data, metaclf, paths
from ownership.errors import UserError
from test_errors import call, fails, w  # noqa: F401  (w is a fixture)


@pytest.fixture(scope="module")
def fx(w):  # noqa: F811
    """The suspect's state_dict, the verification flags, the original p (white-box) and a black-box
    meta-classifier of the right size (4 views x 10 classes)."""
    sd = torch.load(w["good"], weights_only=True)["state_dict"]
    ref = "--b=" + paths.benign(w["md"], "wrn10-1", "-ref")
    flags = [ref, "--m=5", *w["dirs"]]
    r = call("ownership_verification.py", f"--s={w['good']}", *flags)
    assert r.returncode == 0, r.stderr[-1500:]
    rng = np.random.default_rng(0)
    bb = metaclf.fit([rng.normal(size=(20, 40))], [rng.normal(size=(20, 40))], epochs=1)
    bb.update(arch="wrn10-1", kind="black-box", views=4)
    bbpath = str(w["root"] / "bb-clf.pt")
    checkpoints.save_checkpoint(bbpath, bb)
    return dict(sd=sd, flags=flags, p=r.result["p_value"], bb=bbpath)


def save(w, name, obj):  # noqa: F811
    path = str(w["root"] / name)
    torch.save(obj, path)
    return path


def verify_p(fx, *args):
    r = call("ownership_verification.py", *args, *fx["flags"])
    assert r.returncode == 0, r.stderr[-1500:]
    return r


# ----------------------------------------------------------------------------- 1. wrapper prefixes
@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module.", "model.net."])
def test_prefixed_keys_load_the_same_weights(w, fx, prefix, capsys):  # noqa: F811
    sd = {prefix + k: v for k, v in fx["sd"].items()}
    for obj, kw in ((dict(state_dict=sd, arch="wrn10-1", num_classes=10, in_channels=1), {}), (sd, {"arch": "wrn10-1"})):
        path = save(w, "prefixed.pt", obj)
        model, _ = checkpoints.load_model(path, num_classes=10, in_channels=1, **kw)
        got = model.state_dict()
        assert all(torch.equal(got[k], fx["sd"][k]) for k in fx["sd"])
        assert repr(prefix) in capsys.readouterr().err  # the note names the stripped prefix


def test_dataparallel_suspect_same_p(w, fx):  # noqa: F811
    sd = {"module." + k: v for k, v in fx["sd"].items()}
    dp_dict = save(w, "dp_dict.pt", dict(state_dict=sd, arch="wrn10-1", num_classes=10, in_channels=1))
    dp_bare = save(w, "dp_bare.pt", {"module._orig_mod." + k: v for k, v in fx["sd"].items()})
    assert verify_p(fx, f"--s={dp_dict}").result["p_value"] == fx["p"]
    r = verify_p(fx, f"--s={dp_bare}", "--model=wrn10-1")
    assert r.result["p_value"] == fx["p"] and "'module._orig_mod.'" in r.stderr


def test_weights_that_do_not_fit_name_the_keys(w, fx):  # noqa: F811
    sd = {("module." + k if not k.startswith("blocks.0.") else k): v for k, v in fx["sd"].items()}  # not every key
    last = fails(call("ownership_verification.py", f"--s={save(w, 'partial.pt', sd)}", "--model=wrn10-1", *fx["flags"]),
                 "partial.pt", "do not fit wrn10-1", "missing (", "unexpected (module.")
    assert "Traceback" not in last and len(last) < 1200
    sd = dict(fx["sd"])
    sd["fc.weight"] = torch.zeros(10, 7)
    del sd["fc.bias"]
    sd["extra.weight"] = torch.zeros(3)
    last = fails(call("gradientset.py", f"--m={save(w, 'odd.pt', sd)}", "--model=wrn10-1", *w["dirs"]),
                 "1 missing (fc.bias)", "1 unexpected (extra.weight)", "1 of wrong shape (fc.weight 10x7 vs 10x64)")
    assert "--num_classes" not in last or "pass --num_classes" in last


# ----------------------------------------------------------------------------- 2. nested weights
@pytest.mark.parametrize("layout", ["model", "net", "model_state_dict", "checkpoint.model"])
def test_weights_nested_under_another_key(w, fx, layout):  # noqa: F811
    obj = {"optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}, "epoch": 5, "acc": 93.1}
    outer, _, inner = layout.partition(".")
    obj[outer] = {inner: fx["sd"], "epoch": 3} if inner else fx["sd"]
    r = verify_p(fx, f"--s={save(w, 'nested.pt', obj)}", "--model=wrn10-1")
    assert r.result["p_value"] == fx["p"]
    assert r.stderr.count(f"using the weights under {layout!r}") == 1


def test_nested_weights_ambiguous_or_absent(w, fx):  # noqa: F811
    two = save(w, "two.pt", {"model": fx["sd"], "ema": fx["sd"], "epoch": 1})
    fails(call("ownership_verification.py", f"--s={two}", "--model=wrn10-1", *fx["flags"]),
          "two.pt", "2 state_dicts that fit wrn10-1", "'model'", "'ema'", "in Python: import torch", "weights_only=True)['model']")
    none = save(w, "none.pt", {"weights": [1.0, 2.0], "epoch": 3})
    fails(call("ownership_verification.py", f"--s={none}", "--model=wrn10-1", *fx["flags"]),
          "none.pt", "['weights', 'epoch']", "none of them is a state_dict", "ask its owner for the state_dict")


# ----------------------------------------------------------------------------- 3. foreign architecture names
def test_foreign_architecture_name(w, fx):  # noqa: F811
    path = save(w, "foreign.pt", {"arch": "WideResNet-10-1", "epoch": 30, "state_dict": fx["sd"]})
    fails(call("ownership_verification.py", f"--s={path}", *fx["flags"]),
          "foreign.pt", "'WideResNet-10-1'", "wrn16-1, wrn16-2", "--model wrn10-1")
    r = verify_p(fx, f"--s={path}", "--model=wrn10-1")
    assert r.result["p_value"] == fx["p"] and "WideResNet-10-1" in r.stderr
    fails(call("ownership_verification.py", f"--s={path}", "--model=wrn16-1", *fx["flags"]),
          "foreign.pt", "do not fit wrn16-1", "they fit wrn10-1", "--model wrn10-1")


def test_known_architecture_differs_from_model(w, fx):  # noqa: F811
    last = fails(call("ownership_verification.py", f"--s={w['good']}", "--model=wrn10-2", *fx["flags"]),
                 "arch=wrn10-1", "--model wrn10-1")
    assert "--num_classes" not in last


# ----------------------------------------------------------------------------- 4. more classes
@pytest.fixture(scope="module")
def twelve(w, fx):  # noqa: F811
    """The suspect with 2 extra output rows, as the product's dict, a bare state_dict, and a
    .safetensors file without metadata."""
    from safetensors.torch import save_file
    sd = dict(fx["sd"])
    sd["fc.weight"] = torch.cat([sd["fc.weight"], 0.01 * torch.randn(2, sd["fc.weight"].shape[1],
                                                                     generator=torch.Generator().manual_seed(0))])
    sd["fc.bias"] = torch.cat([sd["fc.bias"], torch.zeros(2)])
    st = str(w["root"] / "c12.safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, st)
    return dict(dict=save(w, "c12_dict.pt", dict(state_dict=sd, arch="wrn10-1", num_classes=12, in_channels=1)),
                bare=save(w, "c12_bare.pt", sd), st=st)


def test_more_classes_white_box_refusal(w, fx, twelve):  # noqa: F811
    for path, flags in ((twelve["dict"], []), (twelve["bare"], ["--model=wrn10-1"]), (twelve["st"], ["--model=wrn10-1"])):
        last = fails(call("ownership_verification.py", f"--s={path}", *flags, *fx["flags"]),
                     os.path.basename(path), "12 output classes", "--access black-box --classes-subset first")
        assert "--num_classes" not in last
    fails(call("gradientset.py", f"--m={twelve['dict']}", *w["dirs"]), "c12_dict.pt", "--num_classes 12")
    fails(call("ownership_verification.py", f"--s={w['good']}", "--classes-subset=first", *fx["flags"]),
          "--classes-subset first needs --access black-box")


def test_more_classes_black_box_first_outputs(w, fx, twelve):  # noqa: F811
    """The first 10 of 12 outputs, where the 2 extra rows are new: the original's black-box p."""
    bb = [f"--c={fx['bb']}", "--access=black-box"]
    want = verify_p(fx, f"--s={w['good']}", *bb).result["p_value"]
    fails(call("ownership_verification.py", f"--s={twelve['dict']}", *bb, *fx["flags"]), "--classes-subset first")
    for path, flags in ((twelve["dict"], []), (twelve["bare"], ["--model=wrn10-1"])):
        r = verify_p(fx, f"--s={path}", *flags, *bb, "--classes-subset=first")
        assert r.result["p_value"] == want and "first 10" in r.stderr


# ----------------------------------------------------------------------------- 6. image folders
@pytest.fixture
def styled_copy(w, tmp_path):  # noqa: F811
    dd = str(tmp_path / "data")
    shutil.copytree(w["dd"], dd, ignore=shutil.ignore_patterns("FashionMNIST"))
    return dd, os.path.join(paths.styled_dir(dd, "fmnist"), "test")


def rename_upper(folder, k=None):
    for f in sorted(os.listdir(folder))[:k]:
        os.rename(os.path.join(folder, f), os.path.join(folder, os.path.splitext(f)[0] + ".PNG"))


def test_upper_case_extensions_are_read(w, styled_copy):  # noqa: F811
    dd, test = styled_copy
    want = data.read_folder(test, 1, 28)
    classes = sorted(d for d in os.listdir(test) if os.path.isdir(os.path.join(test, d)))
    rename_upper(os.path.join(test, classes[0]), 1)          # some files of a class
    for cls in classes[1:4]:                                 # whole classes
        rename_upper(os.path.join(test, cls))
    got = data.read_folder(test, 1, 28)
    assert torch.equal(got.x, want.x) and torch.equal(got.y, want.y) and torch.equal(got.idx, want.idx)


def test_upper_case_extensions_same_p(w, fx, styled_copy):  # noqa: F811
    dd, test = styled_copy
    for cls in sorted(d for d in os.listdir(test) if os.path.isdir(os.path.join(test, d)))[:3]:
        rename_upper(os.path.join(test, cls))
    r = call("ownership_verification.py", f"--s={w['good']}", *fx["flags"], f"--data-dir={dd}")
    assert r.returncode == 0 and r.result["p_value"] == fx["p"], r.stderr[-1500:]


def test_files_not_read_are_named(w, styled_copy, capsys):  # noqa: F811
    dd, test = styled_copy
    cls = os.path.join(test, sorted(d for d in os.listdir(test) if os.path.isdir(os.path.join(test, d)))[0])
    n = len(data.read_folder(test, 1, 28))
    for junk in ("Thumbs.db", "notes.txt", ".DS_Store"):
        with open(os.path.join(cls, junk), "w") as f:
            f.write("x")
    capsys.readouterr()
    assert len(data.read_folder(test, 1, 28)) == n
    err = capsys.readouterr().err
    assert "skipped 3 entries" in err and "Thumbs.db" in err and "notes.txt" in err and ".DS_Store" in err
    Image.new("L", (28, 28)).save(os.path.join(cls, "999998.tif"))
    with pytest.raises(UserError, match="999998.tif is a .tif image"):
        data.read_folder(test, 1, 28)
    os.remove(os.path.join(cls, "999998.tif"))
    Image.new("L", (28, 28)).save(os.path.join(cls, "999997"), format="PNG")  # an image without an extension
    with pytest.raises(UserError, match="999997 is an image without an image file extension"):
        data.read_folder(test, 1, 28)
    os.remove(os.path.join(cls, "999997"))
    with open(os.path.join(cls, "999996.PNG"), "wb") as f:  # looks like an image, cannot be decoded
        f.write(b"not a png")
    fails(call("gradientset.py", f"--m={w['good']}", f"--data-dir={dd}", "--split=test"), "999996.PNG", "cannot read image")
