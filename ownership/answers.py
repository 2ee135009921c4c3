"""A suspect's answers, checked at the boundary (issue 16, issue 32; docs/API.md): every answer is
hostile input, so each is parsed under a strict schema and refused with one line naming the problem.

Forms accepted, per query (C = the dataset's classes):
    full row     [p_0, ..., p_{C-1}]                  softmax, any number of decimals (rounded APIs)
    partial row  [p_0, null, ...] or {"3": p, ...}    classes missing (null / absent)
    top-k row    [[class, p], ...]                    the k best classes only
    label        int                                  label-only APIs (--label-only)
Partial and top-k rows, and full rows whose zeros are missing classes (a top-k answer padded with 0),
may sum below 1. Rounded rows may miss 1 by half a unit per value. `normalise` renormalises such rows
and returns the answers' `form` (decimals, top_k); `reducer(form)` is the same reduction for the
references' full answers, so suspect and references are compared like with like. Rows that are
logits (negative values) or scores (sums away from 1 that neither rounding nor missing classes
explain) are refused with that diagnosis.
"""
import csv
import json
import os

import numpy as np

from .errors import UserError

SUM_TOL = 1e-3     # |sum of a full-precision row - 1| allowed (float32 softmax is within 1e-6; CSV rounds)
MAX_DECIMALS = 6   # a row on the 10^-d grid for d <= 6 counts as rounded to d decimals
GRID_TOL = 1e-4    # distance to the grid, in grid units, still "on it" (float32-stored 2-decimal values: 3e-6)
BYTES_PER_VALUE = 256  # a predictions file may hold at most this many bytes per expected value (+ 1 MiB)


# ----------------------------------------------------------------------------- parsing
def _number(x):
    """float of a JSON/NumPy number; TypeError for anything else (bool, str, list, None)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{type(x).__name__} {str(x)[:20]!r}")
    return float(x)  # OverflowError for an integer beyond float range


def _class(c, num_classes):
    if isinstance(c, str) and c.strip().isdigit():
        c = int(c)
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes:
        raise ValueError(f"class {str(c)[:20]!r} is not a class index 0..{num_classes - 1}")
    return int(c)


def _row(row, num_classes):
    """(values, given) lists of one answer row in any accepted form; TypeError/ValueError/OverflowError."""
    v, g = [0.0] * num_classes, [False] * num_classes
    if isinstance(row, dict):
        pairs = list(row.items())
    elif isinstance(row, (list, tuple)) and row and all(isinstance(e, (list, tuple)) for e in row):
        if any(len(e) != 2 for e in row):
            raise ValueError("a top-k entry is not a [class, probability] pair")
        pairs = [tuple(e) for e in row]
    elif isinstance(row, (list, tuple)):
        if len(row) != num_classes:
            raise ValueError(f"a row has {len(row)} values but the classifier expects {num_classes} (one "
                             f"probability per class)")
        pairs = [(c, x) for c, x in enumerate(row) if x is not None]
    else:
        raise TypeError(f"a row is a {type(row).__name__}, not a list of probabilities")
    if not pairs:
        raise ValueError("a row names no class")
    for c, x in pairs:
        c = _class(c, num_classes)
        if g[c]:
            raise ValueError(f"class {c} is given twice in one row")
        v[c], g[c] = _number(x), True
    return v, g


def _shape_error(source, shape, n, num_classes):
    """The one-line UserError for an answer array of the wrong `shape` (n queries, num_classes classes):
    a wrong count of rows is named as such, any other shape as the shape expected."""
    if len(shape) == 2 and shape[1] == num_classes:
        return UserError(f"{source}: {shape[0]} answers for {n} queries; give one probability vector per query, "
                         f"in queries.json order")
    return UserError(f"{source}: answers of shape {tuple(shape)}, expected ({n}, {num_classes}): one probability "
                     f"per class ({num_classes} classes) for each query")


def parse(rows, source, n, num_classes, first=0):
    """(values float64 (n, C), given bool (n, C)) from n answer rows in any accepted form (module
    docstring); a one-line UserError naming `source` for a wrong count, shape, type or class.
    `first`: the query number of rows[0] (for messages). Values are not yet checked (see `check`)."""
    if isinstance(rows, np.ndarray):
        if rows.dtype.kind not in "fiu":
            raise UserError(f"{source}: answers of dtype {rows.dtype} ({'complex' if rows.dtype.kind == 'c' else 'not real numbers'}); "
                            f"give real probabilities")
        if rows.ndim != 2 or rows.shape != (n, num_classes):
            raise _shape_error(source, rows.shape, n, num_classes)
        return rows.astype(np.float64), np.ones(rows.shape, bool)
    if not isinstance(rows, (list, tuple)):
        raise UserError(f"{source}: the answers are a {type(rows).__name__}, not a list of rows; give one "
                        f"probability vector per query")
    if len(rows) != n:
        raise UserError(f"{source}: {len(rows)} answers for {n} queries; give one probability vector per query, "
                        f"in queries.json order")
    v, g = np.zeros((n, num_classes)), np.zeros((n, num_classes), bool)
    for j, row in enumerate(rows):
        try:
            v[j], g[j] = _row(row, num_classes)
        except (TypeError, ValueError, OverflowError) as e:
            what = "a number beyond float range" if isinstance(e, OverflowError) else str(e)[:120]
            raise UserError(f"{source}: answer to query {first + j}: {what}; give probabilities (a row of "
                            f"{num_classes}, or [[class, probability], ...])") from None
    return v, g


def decimals(values):
    """The smallest d <= MAX_DECIMALS with every value on the 10^-d grid, or None (full precision)."""
    v = np.asarray(values, np.float64).ravel()
    if not len(v):
        return None
    for d in range(MAX_DECIMALS + 1):
        u = v * 10.0 ** d
        if np.all(np.abs(u - np.round(u)) <= GRID_TOL + 1e-7 * 10.0 ** d):
            return d
    return None


def check(v, g, source, first=0, d=None):
    """Check answers (values, given) from `parse`: finite, non-negative, each row summing to 1 within
    its tolerance (rounding to `d` decimals: half a unit per value); rows short of 1 only where
    classes are missing (zeros of a full row count as missing). Returns the updated `given`.
    One-line UserError: NaN/Inf, negative values (logits), sums away from 1 (logits or scores)."""
    bad = np.flatnonzero(~np.isfinite(v).all(1))
    if len(bad):
        raise UserError(f"{source}: NaN or Inf in {len(bad)} answers (first: query {first + bad[0]}); ask the API "
                        f"for them again or fix the file")
    neg = np.flatnonzero((v < 0).any(1))
    if len(neg):
        raise UserError(f"{source}: negative values in {len(neg)} answers (query {first + neg[0]}: min "
                        f"{v[neg[0]].min():.4g}); these look like logits: apply softmax to each row")
    g = g.copy()
    s = (v * g).sum(1)
    tol = SUM_TOL if d is None else np.maximum(SUM_TOL, 0.5 * 10.0 ** -d * g.sum(1) + 1e-9)
    padded = (s < 1 - tol) & g.all(1) & ((v == 0) & g).any(1)  # a top-k answer padded with zeros
    g[padded] &= v[padded] != 0
    partial = ~g.all(1)
    off = np.flatnonzero((s > 1 + tol) | ((s < 1 - tol) & ~partial))
    if len(off):
        raise UserError(f"{source}: {len(off)} answers do not sum to 1 (query {first + off[0]} sums to "
                        f"{s[off[0]]:.6g}{'' if d is None else f', rounded to {d} decimals'}); these look like "
                        f"logits or scores: apply softmax to each row")
    zero = np.flatnonzero(s <= 0)
    if len(zero):
        raise UserError(f"{source}: the answer to query {first + zero[0]} gives probability 0 to every class it "
                        f"names ({len(zero)} such answers); it says nothing: ask the API for more decimals or classes")
    return g


def validate(rows, source, n, num_classes, first=0):
    """(values float64 (n, C), given bool (n, C)) of n answer rows, parsed and checked (one batch of an
    API, or a file); a one-line UserError naming `source` and the fix."""
    v, g = parse(rows, source, n, num_classes, first)
    return v, check(v, g, source, first, decimals(v[g]))


def validate_labels(labels, source, n, num_classes, first=0):
    """int64 (n,) class labels, or a one-line UserError."""
    if not isinstance(labels, (list, tuple)):
        raise UserError(f"{source}: \"labels\" is a {type(labels).__name__}, not a list of class indices")
    if len(labels) != n:
        raise UserError(f"{source}: {len(labels)} labels for {n} queries; give one label per query")
    bad = [j for j, v in enumerate(labels) if isinstance(v, bool) or not isinstance(v, (int, np.integer))
           or not 0 <= v < num_classes]
    if bad:
        raise UserError(f"{source}: label {str(labels[bad[0]])[:20]!r} of query {first + bad[0]} is not a class "
                        f"index 0..{num_classes - 1}")
    return np.asarray(labels, dtype=np.int64)


# ----------------------------------------------------------------------------- forms
def normalise(v, g, source):
    """(raw float32 (n, C), form) of checked answers: raw = the values, 0 where a class is missing;
    form = dict(decimals, top_k) (None: full precision, every class). The whole answer set decides the
    form, so batches of mixed precision are checked again here (UserError)."""
    d = decimals(v[g])
    g = check(v, g, source, 0, d)
    partial = ~g.all(1)
    k = int(g[partial].sum(1).max()) if partial.any() else None
    return (v * g).astype(np.float32), dict(decimals=d if d is not None and d <= MAX_DECIMALS else None, top_k=k)


def describe(form, num_classes):
    """A note for the user, or None for full answers."""
    parts = ([f"rounded to {form['decimals']} decimals"] if form.get("decimals") is not None else []) + \
            ([f"top-{form['top_k']} (of {num_classes} classes)"] if form.get("top_k") else [])
    if not parts:
        return None
    return (f"the answers are {' and '.join(parts)}: each row is renormalised to sum to 1, and the references' "
            f"answers are reduced the same way")


def reducer(form):
    """The reduction of full probability rows (Q, C) to the answers' `form` (top-k, then rounding,
    then renormalised; a row rounded to all zeros becomes uniform), or None for full answers. Applied
    to the suspect's raw answers too (where it only renormalises), so both sides see one function."""
    k, d = form.get("top_k"), form.get("decimals")
    if k is None and d is None:
        return None

    def reduce(p):
        p = np.asarray(p, np.float64).copy()
        if k is not None and k < p.shape[1]:
            drop = np.argsort(-p, axis=1, kind="stable")[:, k:]
            np.put_along_axis(p, drop, 0.0, axis=1)
        if d is not None:
            p = np.round(p, d)
        s = p.sum(1, keepdims=True)
        p = np.where(s > 0, p / np.where(s > 0, s, 1), 1.0 / p.shape[1])
        return p.astype(np.float32)
    return reduce


# ----------------------------------------------------------------------------- files
def _order_by_id(path, entries, table):
    """entries: (id, row, line number) -> rows in table order; one-line errors for duplicate,
    unknown and missing ids."""
    seen = {}
    known = {r["id"] for r in table}
    for qid, row, line in entries:
        if qid in seen:
            raise UserError(f"{path}: id {qid[:40]!r} is answered twice (lines {seen[qid][1]} and {line}); keep one "
                            f"answer per query")
        if qid not in known:
            raise UserError(f"{path}: id {qid[:40]!r} (line {line}) is not a query of this run; answer the queries "
                            f"of queries.json (--export-queries) with the same --seed and --c")
        seen[qid] = (row, line)
    missing = [r["id"] for r in table if r["id"] not in seen]
    if missing:
        raise UserError(f"{path}: {len(missing)} queries have no answer (first: {missing[0]!r}); ask the API for "
                        f"them (--endpoint does it, and caches)")
    return [seen[r["id"]][0] for r in table]


def _npy(path, n, num_classes):
    """The array of a .npy file whose header was checked first: real dtype, (n, C) shape, file size."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        except (ValueError, OSError, SyntaxError) as e:
            raise UserError(f"{path} is not a .npy array ({str(e)[:80]}); save the answers with numpy.save") from None
        if dtype.hasobject or dtype.kind not in "fiu":
            raise UserError(f"{path}: answers of dtype {dtype} ({'complex' if dtype.kind == 'c' else 'not real numbers'}); "
                            f"save real probabilities (float32 or float64)")
        if tuple(shape) != (n, num_classes):
            raise _shape_error(path, tuple(shape), n, num_classes)
        if os.path.getsize(path) < f.tell() + n * num_classes * dtype.itemsize:
            raise UserError(f"{path} is truncated: its header promises {n}x{num_classes} values; copy it again")
    return np.load(path, allow_pickle=False)


def _csv(path, table):
    csv.field_size_limit(1 << 16)
    with open(path, newline="") as f:
        lines = [(k, r) for k, r in enumerate(csv.reader(f), 1) if r and any(c.strip() for c in r)]
    ids = False
    if lines and not _is_number(lines[0][1][0]):
        ids = lines[0][1][0].strip().lower() == "id"
        lines = lines[1:]
    if ids:
        return _order_by_id(path, [(r[0].strip(), [_cell(c) for c in r[1:]], k) for k, r in lines], table)
    return [[_cell(c) for c in r] for _, r in lines]


def _cell(c):
    """A CSV value: a number, or an empty cell for a missing class."""
    return None if not c.strip() else float(c)


def _jsonl(path, table, label_only):
    entries = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                raise UserError(f"{path}: line {k} is not JSON; write one {{\"id\": ..., \"probs\": [...]}} "
                                f"object per line") from None
            key = next((x for x in ("probs", "top", "label") if isinstance(obj, dict) and x in obj), None)
            if key is None or "id" not in obj:
                raise UserError(f"{path}: line {k} lacks \"id\" or \"probs\"; write one "
                                f"{{\"id\": ..., \"probs\": [...]}} object per line")
            if key == "label" and not label_only:
                raise UserError(f"{path}: line {k} gives a label only; verify labels with --label-only")
            entries.append((str(obj["id"]), (key, obj[key]), k))
    return _order_by_id(path, entries, table)


def load(path, table, num_classes, label_only=False):
    """Answers from a predictions file (.npy, .csv, .jsonl/.json lines), in table order (ids, where the
    file has them, decide the order): ("labels", int64 (Q,)) or ("probs", (values, given)), checked.
    Bounded: the file size, the .npy header (dtype, shape) before reading, CSV fields of 64 kB."""
    if not os.path.exists(path):
        raise UserError(f"predictions file {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    n = len(table)
    limit = n * num_classes * BYTES_PER_VALUE + (1 << 20)
    if os.path.getsize(path) > limit:
        raise UserError(f"{path} is {os.path.getsize(path)} bytes, more than {limit} for {n} answers of "
                        f"{num_classes} classes; is it the right file?")
    try:
        if ext == ".npy":
            return "probs", validate(_npy(path, n, num_classes), path, n, num_classes)
        if ext == ".csv":
            return "probs", validate(_csv(path, table), path, n, num_classes)
        if ext in (".jsonl", ".json"):
            rows = _jsonl(path, table, label_only)
            kinds = {k for k, _ in rows}
            if kinds == {"label"}:
                return "labels", validate_labels([x for _, x in rows], path, n, num_classes)
            if "label" in kinds:
                raise UserError(f"{path} mixes labels and probabilities; give one kind of answer")
            return "probs", validate([x for _, x in rows], path, n, num_classes)
        raise UserError(f"{path}: unknown predictions format {ext or '(no extension)'}; use .npy, .csv or .jsonl")
    except UserError:
        raise
    except (OSError, ValueError, csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"cannot read predictions {path} ({e.__class__.__name__}: {str(e)[:100]}); write numbers "
                        f"only, one row per query") from None


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False
