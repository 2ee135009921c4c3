"""The evidence record of a verdict, for an arbiter (issue 32, item 8; docs/API.md).

Every verdict of ownership_verification.py carries `evidence`: the query set's sha256 (black-box) or
the stylised images' (white-box, baseline); the suspect's answers file and its sha256 (API) or the
suspect checkpoint's sha256; the references' and the meta-classifier's sha256; the code commit (and
whether the working tree had changes); the seed, dataset, gamma, protocol and the answers' form
(rounding, top-k, label-only). `verify_record` recomputes the p-value from the record alone, offline:
it checks every named file against its sha256, reruns the verification on them (the answers file
stands in for the API), and says whether the p-value matches.
"""
import hashlib
import json
import os
import subprocess

from . import jsonio
from .checkpoints import atomic_write
from .constants import REPO
from .errors import UserError

P_TOL = 1e-9  # relative difference of a recomputed p-value still "the same" (float summation order)


def sha256_file(path):
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def commit():
    """(commit hash or None, whether tracked files differ from it) of the code that ran. The command
    is fixed; nothing of the user's or the suspect's reaches it."""
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    if head.returncode:
        return None, None
    return head.stdout.strip(), bool(dirty.stdout.strip())


def answers_text(rows):
    """The suspect's answers as received, one JSON line per query: {"id", "probs": [p or null, ...]} or
    {"id", "label"} (a --predictions file)."""
    return "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows)


def write_text(path, text):
    atomic_write(path, lambda tmp: open(tmp, "w").write(text))


def build(*, queries_sha256, references, clf, seed, dataset, gamma, access, black_box, label_only, form,
          protocol, answers_file=None, suspect_file=None, flags=None):
    """The `evidence` dict of a verdict (module docstring)."""
    head, dirty = commit()
    out = dict(queries_sha256=queries_sha256,
               references=[dict(path=os.path.abspath(r), sha256=sha256_file(r)) for r in references],
               clf=None if clf is None else dict(path=os.path.abspath(clf), sha256=sha256_file(clf)),
               commit=head, dirty=dirty, seed=seed, dataset=dataset, gamma=gamma, access=access, black_box=black_box,
               label_only=bool(label_only), answers_form=form, protocol=protocol, flags=flags or {})
    if answers_file:
        out.update(answers_file=os.path.abspath(answers_file), answers_sha256=sha256_file(answers_file))
    if suspect_file:
        out.update(suspect_file=os.path.abspath(suspect_file), suspect_sha256=sha256_file(suspect_file))
    return out


def write_record(path, record):
    jsonio.write(path, record)


def _check(path, sha, what, record_path):
    if not os.path.exists(path):
        raise UserError(f"{record_path}: its {what} {path} does not exist here; copy it to that path to verify")
    if sha256_file(path) != sha:
        raise UserError(f"{record_path}: its {what} {path} is not the file of the record (sha256 differs); it "
                        f"was changed or replaced since the verdict")


def load_record(path):
    """The record (the verdict's JSON file, or a file holding its printed JSON line) and its evidence,
    after checking every file it names against its sha256."""
    try:
        with open(path) as f:
            text = f.read(64 << 20)
        try:
            record = json.loads(text)
        except ValueError:  # the command's output: the result line, then the JSON line
            record = json.loads(text.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, RecursionError) as e:
        raise UserError(f"cannot read the record {path} ({e.__class__.__name__}); give the .json file a verdict "
                        f"wrote next to its probabilities") from None
    ev = record.get("evidence") if isinstance(record, dict) else None
    if not isinstance(ev, dict) or "p_value" not in record:
        raise UserError(f"{path} holds no verdict with an 'evidence' record; give the .json file a verdict wrote")
    for r in ev["references"]:
        _check(r["path"], r["sha256"], "benign reference", path)
    if ev.get("clf"):
        _check(ev["clf"]["path"], ev["clf"]["sha256"], "meta-classifier", path)
    if ev.get("answers_file"):
        _check(ev["answers_file"], ev["answers_sha256"], "answers file", path)
    if ev.get("suspect_file"):
        _check(ev["suspect_file"], ev["suspect_sha256"], "suspect checkpoint", path)
    return record, ev


def compare(path, record, again):
    """The verify-record summary: recorded vs recomputed p-value and query set; UserError if they differ."""
    ev = record["evidence"]
    same_q = again["evidence"]["queries_sha256"] == ev["queries_sha256"]
    p0, p1 = record["p_value"], again["p_value"]
    same_p = p0 == p1 or (p0 is not None and p1 is not None and abs(p0 - p1) <= P_TOL * max(abs(p0), abs(p1)))
    summary = dict(record=os.path.abspath(path), p_value_recorded=p0, p_value_recomputed=p1,
                   verdict_recorded=record.get("verdict"), verdict_recomputed=again.get("verdict"),
                   queries_match=same_q, commit_recorded=ev.get("commit"), commit_now=commit()[0],
                   matches=bool(same_q and same_p))
    if not same_q:
        raise UserError(f"{path}: the query set recomputed here (data in --data-dir, seed {ev['seed']}) is not the "
                        f"record's (sha256 differs); point --data-dir at the data the verdict used")
    if not same_p:
        raise UserError(f"{path}: recomputed p-value {p1} differs from the recorded {p0} (code {commit()[0]} vs "
                        f"recorded {ev.get('commit')}); the record does not reproduce")
    print(f"record {path}: recomputed p-value {p1} matches the recorded {p0} ({again.get('verdict')})")
    return summary
