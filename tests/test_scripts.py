"""Every script in the tree runs: `--help` of each top-level stage script and each benchmark, in a
fresh process, so none can rot unseen (an import error, a NameError at module level, a broken parser)."""
import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "*.py"))
                 + glob.glob(os.path.join(REPO, "benchmarks", "*.py")))
SHELL = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "benchmarks", "*.sh")))


def test_the_tree_has_the_stage_scripts():
    for name in ("embed_features.py", "train_model.py", "steal.py", "gradientset.py", "train_clf.py",
                 "ownership_verification.py", "reproduce.py", "evaluate.py"):
        assert name in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script):
    r = subprocess.run([sys.executable, os.path.join(REPO, script), "--help"], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout


@pytest.mark.parametrize("script", SHELL)
def test_shell_scripts_parse(script):
    r = subprocess.run(["bash", "-n", os.path.join(REPO, script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
