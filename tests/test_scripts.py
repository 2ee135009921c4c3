"""Every script in the tree runs: `--help` of each top-level stage script and each benchmark, in one
fresh process (an import error, a NameError at module level or a broken parser fails it), and `bash -n`
of the shell scripts, so none can rot unseen."""
import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "*.py"))
                 + glob.glob(os.path.join(REPO, "benchmarks", "*.py")))
SHELL = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "benchmarks", "*.sh")))

# runs each script as __main__ with --help in one interpreter; prints "<script> <exit code> <has usage>"
HELP_ALL = """
import contextlib, io, runpy, sys
for script in sys.argv[1:]:
    out, code = io.StringIO(), None
    sys.argv = [script, "--help"]
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            code = e.code
    print(script, code, "usage:" in out.getvalue(), flush=True)
"""


def test_the_tree_has_the_stage_scripts():
    for name in ("embed_features.py", "train_model.py", "steal.py", "gradientset.py", "train_clf.py",
                 "ownership_verification.py", "reproduce.py", "evaluate.py", "serve.py"):
        assert name in SCRIPTS


def test_every_script_shows_its_help():
    r = subprocess.run([sys.executable, "-c", HELP_ALL, *SCRIPTS], capture_output=True, text=True, timeout=300,
                       cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr[-3000:]
    results = dict((line.split()[0], line.split()[1:]) for line in r.stdout.splitlines() if line.strip())
    for script in SCRIPTS:
        assert results.get(script) == ["0", "True"], (script, results.get(script), r.stderr[-2000:])


@pytest.mark.parametrize("script", SHELL)
def test_shell_scripts_parse(script):
    r = subprocess.run(["bash", "-n", os.path.join(REPO, script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
