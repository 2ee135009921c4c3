"""A suspect file that is no checkpoint says what it is, and re-save hints never build a shell command
from the untrusted file name nor suggest weights_only=False (issue 32, items 6 and the misdiagnosis)."""
import io
import os

import pytest
import torch
from PIL import Image

from ownership.checkpoints import load_checkpoint, resave_snippet
from ownership.errors import UserError


def png():
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("content,what", [
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "is an HTML page (a failed download?"),
    (None, "is a PNG image"),
    (b"", "is empty (0 bytes)"),
    (b"weights are attached to the other mail\n", "is text"),
    (b'{"state_dict": {}}', "is JSON text"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n", "Git LFS pointer"),
])
def test_file_that_is_no_checkpoint_says_what_it_is(tmp_path, content, what):
    path = tmp_path / "suspect.pt"
    path.write_bytes(png() if content is None else content)
    with pytest.raises(UserError) as e:
        load_checkpoint(str(path), "suspect model")
    msg = str(e.value)
    assert what in msg and "not a PyTorch checkpoint" in msg and "state_dict" not in msg.split(";")[0], msg
    assert "\n" not in msg


def test_real_checkpoint_still_loads(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({"w": torch.zeros(2)}, path)
    assert torch.equal(load_checkpoint(str(path))["state_dict"]["w"], torch.zeros(2))


def test_hints_build_no_shell_command_from_a_hostile_name(tmp_path):
    name = str(tmp_path / 'x"$(touch PWNED)`id`.pt')
    for key in ("model", None, "a.b"):
        hint = resave_snippet(name, key)
        assert "python -c" not in hint and "weights_only=False" not in hint
        if key:  # Python lines whose literals are the name, quoted by repr: pasting them runs no shell
            assert hint.startswith("in Python: ") and repr(name) in hint and "weights_only=True" in hint
    with open(name, "wb") as f:
        torch.save([torch.zeros(1)], f)  # a list: no state_dict
    with pytest.raises(UserError) as e:
        load_checkpoint(name)
    assert "weights_only=False" not in str(e.value) and "python -c" not in str(e.value)
    assert not os.path.exists(tmp_path / "PWNED")
