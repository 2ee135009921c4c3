"""Every `--flag` that a user-facing error message suggests is an option of the script that prints it
(e.g. ownership_verification.py has no --num_classes). Runs the error cases of test_formats and
test_errors in-process and checks each last stderr line against the printing script's parser."""
import importlib
import re

import pytest
import torch

from ownership import paths
from test_errors import call, w  # noqa: F401  (w is a fixture)

FLAG = re.compile(r"(?<![\w/-])--[A-Za-z][\w-]*")
COMMAND = re.compile(r"'python ([\w]+\.py)([^']*)'")  # a command the message gives: its flags are that script's


def suggested(script, line):
    """(script, flag) for every flag in `line`: in a quoted 'python other.py ...' command, other.py's;
    elsewhere the printing script's."""
    pairs = [(m.group(1), f) for m in COMMAND.finditer(line) for f in FLAG.findall(m.group(2))]
    return pairs + [(script, f) for f in FLAG.findall(COMMAND.sub("", line))]


def options(script):
    return set(importlib.import_module(script[:-3]).get_parser()._option_string_actions)


def check(script, *args):
    r = call(script, *args)
    assert r.returncode == 2, (script, args, r.stderr[-800:])
    last = r.stderr.strip().splitlines()[-1]
    unknown = [(s, f) for s, f in suggested(script, last) if f not in options(s)]
    assert not unknown, f"{script} suggests {unknown}, which it does not have: {last}"
    return last


def test_flag_pattern_finds_flags():
    assert FLAG.findall("pass --model wrn10-1 (or --num_classes 12); see data/--x and --access=black-box") == \
        ["--model", "--num_classes", "--access"]
    assert suggested("gradientset.py", "x; make it with 'python reproduce.py --preset fmnist'; pass --model a") == \
        [("reproduce.py", "--preset"), ("gradientset.py", "--model")]


@pytest.fixture(scope="module")
def files(w):  # noqa: F811
    sd = torch.load(w["good"], weights_only=True)["state_dict"]
    big = dict(sd, **{"fc.weight": torch.cat([sd["fc.weight"], torch.zeros(2, sd["fc.weight"].shape[1])]),
                      "fc.bias": torch.cat([sd["fc.bias"], torch.zeros(2)])})
    out = {}
    for name, obj in (("dp_bare", {"module." + k: v for k, v in sd.items()}),
                      ("c12_dict", dict(state_dict=big, arch="wrn10-1", num_classes=12, in_channels=1)),
                      ("c12_bare", big), ("foreign", {"arch": "WideResNet-10-1", "state_dict": sd}),
                      ("two", {"model": sd, "ema": sd}), ("none", {"weights": [1.0], "epoch": 1}),
                      ("odd", {k: v for k, v in sd.items() if k != "fc.bias"})):
        out[name] = str(w["root"] / f"msg-{name}.pt")
        torch.save(obj, out[name])
    from safetensors.torch import save_file
    out["c12_st"] = str(w["root"] / "msg-c12.safetensors")
    save_file({k: v.contiguous() for k, v in big.items()}, out["c12_st"])
    out["trunc"] = str(w["root"] / "msg-trunc.pt")
    with open(w["good"], "rb") as f, open(out["trunc"], "wb") as g:
        g.write(f.read()[:1000])
    return out


SCRIPTS = ("ownership_verification.py", "gradientset.py")


def args_for(script, path, w, *extra):  # noqa: F811
    return ([f"--s={path}", "--b=" + paths.benign(w["md"], "wrn10-1", "-ref")] if script == SCRIPTS[0]
            else [f"--m={path}"]) + list(extra) + w["dirs"]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("case,extra", [
    ("dp_bare", []), ("c12_dict", []), ("c12_bare", ["--model=wrn10-1"]), ("c12_st", ["--model=wrn10-1"]),
    ("c12_st", []), ("foreign", []), ("foreign", ["--model=wrn16-1"]), ("two", ["--model=wrn10-1"]),
    ("none", ["--model=wrn10-1"]), ("odd", ["--model=wrn10-1"]), ("trunc", []), ("good", ["--model=wrn10-2"]),
    ("good", ["--model=wrn16-1"]), ("good", ["--m=500"]), ("/nonexistent/x.pt", []),
])
def test_suggested_flags_exist(w, files, script, case, extra):  # noqa: F811
    if script == "gradientset.py" and extra == ["--m=500"]:
        extra = ["--num_classes=20"]  # the gradientset counterpart: a class count the checkpoint does not have
    path = files.get(case) or (w["good"] if case == "good" else case)
    check(script, *args_for(script, path, w, *extra))


def test_suggested_flags_exist_other_scripts(w, files, tmp_path):  # noqa: F811
    """train_clf.py (--type, no --model) and steal.py (--arch, --victim) load checkpoints too."""
    check("train_clf.py", "--type=wrn10-1", "--access=black-box", f"--pos={files['c12_dict']}",
          f"--neg={w['good']}", *w["dirs"])
    check("train_clf.py", "--type=wrn16-1", "--access=black-box", f"--pos={files['foreign']}",
          f"--neg={w['good']}", *w["dirs"])
    check("train_clf.py", "--type=wrn10-2", "--access=black-box", f"--pos={w['good']}", f"--neg={w['good']}", *w["dirs"])
    check("steal.py", "--mode=fine-tune", "--preset=smoke", f"--victim={files['dp_bare']}", *w["dirs"][:2])
    check("steal.py", "--mode=fine-tune", "--preset=smoke", f"--victim={files['foreign']}", *w["dirs"][:2])


def test_black_box_and_subset_messages(w, files):  # noqa: F811
    last = check("ownership_verification.py", *args_for("ownership_verification.py", w["good"], w,
                                                         "--classes-subset=first"))
    assert "--access black-box" in last
    assert "--num_classes" not in check("ownership_verification.py",
                                        *args_for("ownership_verification.py", files["c12_dict"], w))
