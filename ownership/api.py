"""Black-box verification of a suspect behind a prediction API: queries out, predictions in, no
weights (issue 16; docs/API.md). Used by ownership_verification.py (--export-queries, --predictions,
--endpoint) and serve.py.

The queries are blackbox.queries(): for each of the N stylised test images, its original x, then the
views v_0 (the stylised image) .. v_{K-1}, uint8, image-major; query ids are "<image:05d>-<view>"
("00012-x", "00012-v0" ...). The answers (one probability vector per query) go through
blackbox.features_from_probs and the per-dataset black-box meta-classifier blackbox-<dataset>.pt, and
are tested against the held-out benign references of every architecture, queried with the same images
on their weights.

HTTP schema (version 1), one POST per batch of --api-batch queries:
    request   {"images": ["<base64 PNG>", ...]}     PNG of the uint8 image, L (1 channel) or RGB
    answer    {"probs": [[p_0, ..., p_{C-1}], ...]}  softmax, one row per image, same order
    or        {"labels": [int, ...]}                  a label-only API (--label-only: one-hot vectors)
    HTTP 429 and 5xx (and timeouts, refused connections) are retried with exponential backoff.
"""
import base64
import csv
import hashlib
import io
import json
import os
import sys
import time

import numpy as np
import requests
import torch
from PIL import Image
from tqdm import tqdm

from . import blackbox, jsonio, paths
from .checkpoints import load_checkpoint
from .data import load_styled
from .errors import UserError
from .presets import DATASETS

SCHEMA = 1
SUM_TOL = 1e-3  # |sum of a probability row - 1| allowed (float32 softmax is within 1e-6; CSV rounds)
DEFAULT_VIEWS = 4  # train_clf.py's default, for exports made before the classifier exists


# ----------------------------------------------------------------------------- command line
def add_arguments(p):
    """The API flags of ownership_verification.py."""
    g = p.add_argument_group("black-box verification through a prediction API (docs/API.md)")
    g.add_argument("--export-queries", metavar="DIR", default=None,
                   help="write every query image as DIR/<id>.png and DIR/queries.json (their order), then stop")
    g.add_argument("--predictions", metavar="FILE", default=None,
                   help="the API's answers, one probability vector per query in queries.json order: .npy, "
                        ".csv (optional header; a first column 'id' gives ids) or .jsonl lines {\"id\", \"probs\"}")
    g.add_argument("--queries", metavar="DIR", default=None,
                   help="with --predictions: check that DIR/queries.json (the export) are this run's queries")
    g.add_argument("--endpoint", metavar="URL", default=None, help="ask an HTTP prediction API (schema in docs/API.md)")
    g.add_argument("--label-only", action="store_true",
                   help="use only the top label of each answer (one-hot vectors), for APIs that return labels")
    g.add_argument("--api-batch", type=int, default=64, help="images per request")
    g.add_argument("--max-qps", type=float, default=10.0, help="at most this many requests per second (0: no limit)")
    g.add_argument("--api-timeout", type=float, default=60.0, help="seconds to wait for one answer")
    g.add_argument("--api-retries", type=int, default=5, help="retries of a failed request (backoff 1, 2, 4 ... x --api-backoff)")
    g.add_argument("--api-backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each retry")
    g.add_argument("--api-cache", metavar="FILE", default=None,
                   help="JSONL cache of the answers (default: <prob-dir>/<dataset>/api-cache.jsonl); a rerun asks "
                        "only for queries it does not hold")
    return p


def requested(args):
    """Whether the command goes through the API path (no suspect checkpoint)."""
    return any(getattr(args, k, None) for k in ("export_queries", "predictions", "endpoint"))


def check_args(args):
    """The API flags exclude each other and a suspect checkpoint; their numbers are in range."""
    given = [f for f, k in (("--export-queries", "export_queries"), ("--predictions", "predictions"),
                            ("--endpoint", "endpoint")) if getattr(args, k)]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} exclude each other: export the queries, then verify from a "
                        f"predictions file or from an endpoint")
    if getattr(args, "suspect", None) or getattr(args, "model", None):
        raise UserError(f"--s/--model name a suspect checkpoint, but with {given[0]} the suspect is the API: drop them")
    if args.api_batch < 1:
        raise UserError(f"--api-batch {args.api_batch} must be at least 1")
    if args.max_qps < 0 or args.api_retries < 0 or args.api_timeout <= 0 or args.api_backoff < 0:
        raise UserError("--max-qps, --api-retries and --api-backoff must be >= 0 and --api-timeout > 0")


# ----------------------------------------------------------------------------- queries
def query_table(q, styled, views):
    """One dict per query, in query order: id, file, image (row of the stylised set), index (its index
    in the dataset's test split), view ('x' original, 'v0' stylised, 'v1'.. augmented), sha256 of the
    uint8 pixels (C, H, W order; the cache key with the id)."""
    names = blackbox.view_names(views)
    arr = q.numpy()
    out = []
    for j in range(len(q)):
        i, v = divmod(j, views + 1)
        qid = f"{i:05d}-{names[v]}"
        out.append(dict(id=qid, file=qid + ".png", image=i, index=int(styled.idx[i]), view=names[v],
                        sha256=hashlib.sha256(arr[j].tobytes()).hexdigest()))
    return out


def png_bytes(x):
    """PNG of one uint8 image (C, H, W): mode L for one channel, RGB for three (lossless)."""
    a = x.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data, channels, size):
    """uint8 (C, H, W) from PNG (or any PIL-readable) bytes; ValueError with the reason if unusable."""
    with Image.open(io.BytesIO(data)) as im:
        if im.size != (size, size):
            raise ValueError(f"image is {im.size[0]}x{im.size[1]}, the model takes {size}x{size}")
        a = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8).reshape(size, size, channels)
    return torch.from_numpy(a.copy()).permute(2, 0, 1)


def _meta(args, views, styled, q):
    d = DATASETS[args.dataset]
    return dict(schema=SCHEMA, dataset=args.dataset, split="test", gamma=args.gamma, seed=args.seed, views=views,
                num_classes=d["num_classes"], shape=list(q.shape[1:]), n_images=len(styled), n_queries=len(q),
                order="image-major: per image its original 'x', then 'v0' (stylised) .. 'v<views-1>' (augmented)",
                digest=hashlib.sha256(q.numpy().tobytes()).hexdigest())


def export_queries(folder, q, table, meta):
    """Write folder/<id>.png for every query and folder/queries.json (last, atomically: a folder
    without it is an interrupted export)."""
    os.makedirs(folder, exist_ok=True)
    for row, x in zip(tqdm(table, desc="export queries", unit="img", leave=False), q):
        with open(os.path.join(folder, row["file"]), "wb") as f:
            f.write(png_bytes(x))
    out = os.path.join(folder, "queries.json")
    jsonio.write(out, dict(meta, queries=table))
    return out


def check_queries_json(folder, meta):
    """The export in `folder` must be this run's queries (same pixels: dataset, seed, views, data)."""
    path = os.path.join(folder, "queries.json")
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({e.__class__.__name__}); export the queries again with "
                        f"--export-queries {folder}") from None
    if old.get("digest") != meta["digest"]:
        diff = [k for k in ("schema", "dataset", "seed", "views", "gamma", "n_queries") if old.get(k) != meta[k]]
        raise UserError(f"{path} holds other queries than this run's ({', '.join(f'{k}: {old.get(k)} vs {meta[k]}' for k in diff) or 'other pixels'}); "
                        f"verify with the same --dataset/--seed/--c as the export, or export again")


# ----------------------------------------------------------------------------- answers
def validate(rows, source, n, num_classes, first=0):
    """float32 (n, num_classes) from a list/array of probability rows, or a one-line UserError naming
    `source` and the fix. `first`: the query number of rows[0] (for messages)."""
    if len(rows) != n:
        raise UserError(f"{source}: {len(rows)} answers for {n} queries; give one probability vector per query, "
                        f"in queries.json order")
    widths = {len(r) if hasattr(r, "__len__") else -1 for r in rows} if not isinstance(rows, np.ndarray) else None
    if isinstance(rows, np.ndarray) and (rows.ndim != 2 or rows.shape[1] != num_classes):
        raise UserError(f"{source}: answers of shape {rows.shape}, expected ({n}, {num_classes}): one probability per "
                        f"class ({num_classes} classes) for each query")
    if widths is not None and widths != {num_classes}:
        bad = sorted(widths - {num_classes})[0]
        raise UserError(f"{source}: a row has {bad if bad >= 0 else 'no list of'} values but the classifier expects "
                        f"{num_classes} (one probability per class)")
    try:
        p = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: answers are not numbers ({str(e)[:80]}); give probabilities") from None
    bad = np.flatnonzero(~np.isfinite(p).all(1))
    if len(bad):
        raise UserError(f"{source}: NaN or Inf in {len(bad)} answers (first: query {first + bad[0]}); ask the API "
                        f"for them again or fix the file")
    neg = np.flatnonzero((p < 0).any(1))
    if len(neg):
        raise UserError(f"{source}: negative values in {len(neg)} answers (query {first + neg[0]}: min "
                        f"{p[neg[0]].min():.4g}); these look like logits: apply softmax to each row")
    sums = p.sum(1)
    off = np.flatnonzero(np.abs(sums - 1) > SUM_TOL)
    if len(off):
        raise UserError(f"{source}: {len(off)} answers do not sum to 1 (query {first + off[0]} sums to "
                        f"{sums[off[0]]:.6g}); these look like logits or scores: apply softmax to each row")
    return p.astype(np.float32)


def validate_labels(labels, source, n, num_classes, first=0):
    """int64 (n,) class labels, or a one-line UserError."""
    if len(labels) != n:
        raise UserError(f"{source}: {len(labels)} labels for {n} queries; give one label per query")
    bad = [j for j, v in enumerate(labels) if isinstance(v, bool) or not isinstance(v, (int, np.integer))
           or not 0 <= v < num_classes]
    if bad:
        raise UserError(f"{source}: label {labels[bad[0]]!r} of query {first + bad[0]} is not a class index 0..{num_classes - 1}")
    return np.asarray(labels, dtype=np.int64)


def _order_by_id(path, entries, table):
    """entries: (id, row, line number) -> rows in table order; one-line errors for duplicate,
    unknown and missing ids."""
    seen = {}
    known = {r["id"] for r in table}
    for qid, row, line in entries:
        if qid in seen:
            raise UserError(f"{path}: id {qid!r} is answered twice (lines {seen[qid][1]} and {line}); keep one "
                            f"answer per query")
        if qid not in known:
            raise UserError(f"{path}: id {qid!r} (line {line}) is not a query of this run; answer the queries of "
                            f"queries.json (--export-queries) with the same --seed and --c")
        seen[qid] = (row, line)
    missing = [r["id"] for r in table if r["id"] not in seen]
    if missing:
        raise UserError(f"{path}: {len(missing)} queries have no answer (first: {missing[0]!r}); ask the API for "
                        f"them (--endpoint does it, and caches)")
    return [seen[r["id"]][0] for r in table]


def load_predictions(path, table, num_classes):
    """float32 (Q, num_classes) answers from `path` (.npy, .csv, .jsonl/.json lines), validated and
    in table order (ids, where the file has them, decide the order)."""
    if not os.path.exists(path):
        raise UserError(f"predictions file {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    n = len(table)
    try:
        if ext == ".npy":
            rows = np.load(path, allow_pickle=False)
        elif ext == ".csv":
            with open(path, newline="") as f:
                lines = [(k, r) for k, r in enumerate(csv.reader(f), 1) if r and any(c.strip() for c in r)]
            ids = False
            if lines and not _is_number(lines[0][1][0]):
                ids = lines[0][1][0].strip().lower() == "id"
                lines = lines[1:]
            if ids:
                rows = _order_by_id(path, [(r[0].strip(), [float(c) for c in r[1:]], k) for k, r in lines], table)
            else:
                rows = [[float(c) for c in r] for _, r in lines]
        elif ext in (".jsonl", ".json"):
            entries = []
            with open(path) as f:
                for k, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        raise UserError(f"{path}: line {k} is not JSON; write one {{\"id\": ..., \"probs\": [...]}} "
                                        f"object per line") from None
                    if not isinstance(obj, dict) or "id" not in obj or "probs" not in obj:
                        raise UserError(f"{path}: line {k} lacks \"id\" or \"probs\"; write one "
                                        f"{{\"id\": ..., \"probs\": [...]}} object per line")
                    entries.append((str(obj["id"]), obj["probs"], k))
            rows = _order_by_id(path, entries, table)
        else:
            raise UserError(f"{path}: unknown predictions format {ext or '(no extension)'}; use .npy, .csv or .jsonl")
    except UserError:
        raise
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read predictions {path} ({e.__class__.__name__}: {str(e)[:100]}); write numbers "
                        f"only, one row per query") from None
    return validate(rows, path, n, num_classes)


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- HTTP client
class Client:
    """Asks an HTTP prediction API (the schema above) for the queries it has no cached answer to.

    The cache is a JSONL file, one line per answered query: {"endpoint", "id", "sha256", "probs"} or
    {..., "label"}; an answer is reused when endpoint, id and pixel digest match. Answers are validated
    before they are cached, and appended (flushed, fsynced) batch by batch, so a failure mid-way loses
    nothing already answered; a torn last line is skipped on reading."""

    def __init__(self, url, cache_path, label_only=False, batch=64, max_qps=10.0, timeout=60.0, retries=5,
                 backoff=1.0):
        self.requests = requests
        self.url, self.cache_path, self.label_only = url, cache_path, label_only
        self.batch, self.max_qps, self.timeout, self.retries, self.backoff = batch, max_qps, timeout, retries, backoff
        self.session = requests.Session()
        self._next = 0.0
        self.sent = 0  # requests sent by this client (tests)

    def _cached(self):
        out = {}
        if not os.path.exists(self.cache_path):
            return out
        with open(self.cache_path) as f:
            for line in f:
                try:
                    e = json.loads(line)
                    if e.get("endpoint") == self.url:
                        out[(e["id"], e["sha256"])] = e
                except (ValueError, KeyError, AttributeError):
                    continue  # a line torn by a crash
        return out

    def _append(self, entries):
        os.makedirs(os.path.dirname(os.path.abspath(self.cache_path)), exist_ok=True)
        with open(self.cache_path, "a") as f:
            f.write("".join(json.dumps(e, allow_nan=False) + "\n" for e in entries))
            f.flush()
            os.fsync(f.fileno())

    def _wait(self):
        if self.max_qps > 0:
            now = time.monotonic()
            if now < self._next:
                time.sleep(self._next - now)
            self._next = max(now, self._next) + 1.0 / self.max_qps

    def _post(self, images, what):
        err = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self._wait()
            self.sent += 1
            try:
                r = self.session.post(self.url, json={"images": images}, timeout=self.timeout)
            except (self.requests.ConnectionError, self.requests.Timeout) as e:
                err = e.__class__.__name__
                continue
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError:
                    raise UserError(f"{self.url}: the answer to {what} is not JSON ({r.text[:60]!r}); the endpoint "
                                    f"must follow the schema of docs/API.md") from None
            if r.status_code != 429 and r.status_code < 500:
                raise UserError(f"{self.url} refused {what}: HTTP {r.status_code} {r.text[:100]!r}; check the URL "
                                f"and the schema of docs/API.md")
            err = f"HTTP {r.status_code}"
        raise UserError(f"{self.url}: no answer to {what} after {self.retries + 1} tries ({err})")

    def ask(self, q, table, num_classes):
        """float32 (Q, num_classes) answers to the uint8 queries q in table order: cached ones, then the
        missing ones asked in batches; --label-only turns each into the one-hot vector of its label."""
        cached = self._cached()
        usable = lambda e: e is not None and ("label" in e or "probs" in e and len(e["probs"]) == num_classes)  # noqa: E731
        missing = [j for j, r in enumerate(table) if not usable(cached.get((r["id"], r["sha256"])))
                   or (not self.label_only and "probs" not in cached[(r["id"], r["sha256"])])]
        bar = tqdm(total=len(missing), desc=f"API {self.url}", unit="img", leave=False)
        try:
            for s in range(0, len(missing), self.batch):
                js = missing[s:s + self.batch]
                what = f"queries {table[js[0]]['id']}..{table[js[-1]]['id']}"
                ans = self._post([base64.b64encode(png_bytes(q[j])).decode("ascii") for j in js], what)
                entries = self._parse(ans, js, table, num_classes, what)
                self._append(entries)
                cached.update({(e["id"], e["sha256"]): e for e in entries})
                bar.update(len(js))
        except UserError as e:
            have = sum(usable(cached.get((r["id"], r["sha256"]))) for r in table)
            raise UserError(f"{e}; {have} of {len(table)} answers are kept in {self.cache_path}, and rerunning the "
                            f"same command asks only for the rest") from None
        finally:
            bar.close()
        out = np.zeros((len(table), num_classes), np.float32)
        for j, r in enumerate(table):
            e = cached[(r["id"], r["sha256"])]
            if self.label_only:
                out[j, e["label"] if "label" in e else int(np.argmax(e["probs"]))] = 1
            else:
                out[j] = e["probs"]
        return out

    def _parse(self, ans, js, table, num_classes, what):
        source = f"{self.url} (answer to {what})"
        if isinstance(ans, dict) and "probs" in ans:
            p = validate(ans["probs"], source, len(js), num_classes, js[0])
            return [dict(endpoint=self.url, id=table[j]["id"], sha256=table[j]["sha256"], probs=p[k].tolist())
                    for k, j in enumerate(js)]
        if isinstance(ans, dict) and "labels" in ans:
            if not self.label_only:
                raise UserError(f"{source}: the endpoint answers labels only; rerun with --label-only")
            lab = validate_labels(ans["labels"], source, len(js), num_classes, js[0])
            return [dict(endpoint=self.url, id=table[j]["id"], sha256=table[j]["sha256"], label=int(lab[k]))
                    for k, j in enumerate(js)]
        raise UserError(f"{source}: no \"probs\" or \"labels\" in the answer ({json.dumps(ans)[:60]}); the endpoint "
                        f"must follow the schema of docs/API.md")


# ----------------------------------------------------------------------------- verification
def export(args):
    """--export-queries DIR: write the queries of the per-dataset black-box classifier (its number of
    views; train_clf.py's default if it does not exist yet) and queries.json. Returns a summary dict."""
    clf_path = args.clf or paths.clf(args.model_dir, args.dataset, None, "black-box")
    if os.path.exists(clf_path):
        views = load_checkpoint(clf_path, "meta-classifier").get("views", DEFAULT_VIEWS)
    else:
        views = DEFAULT_VIEWS
        print(f"note: {clf_path} does not exist yet; exporting {views} views per image, train_clf.py's default",
              file=sys.stderr)
    images = load_styled(args.data_dir, args.dataset, args.gamma, "test")
    q = blackbox.queries(images, blackbox.originals(images, args.dataset, args.data_dir, "test"), args.dataset,
                         views, args.seed)
    out = export_queries(args.export_queries, q, query_table(q, images, views), _meta(args, views, images, q))
    print(f"wrote {len(q)} queries ({len(images)} images x {views + 1}) to {args.export_queries}; order in {out}")
    summary = dict(queries=out, n_queries=len(q), views=views)
    print(jsonio.dumps(summary))
    return summary


def answers(args, verifier):
    """The suspect's answers to `verifier.queries`, from --predictions or --endpoint: float32 (Q,
    num_classes) and a dict saying where they came from (for the result record)."""
    if verifier.access != "black-box":
        raise UserError(f"{verifier.clf_path} is a {verifier.access} meta-classifier; an API gives predictions only: "
                        f"use a black-box one ('python train_clf.py --access black-box --dataset {args.dataset}')")
    d = DATASETS[args.dataset]
    views = verifier.clf["views"]
    table = query_table(verifier.queries, verifier.images, views)
    if args.queries:
        check_queries_json(args.queries, _meta(args, views, verifier.images, verifier.queries))
    if args.predictions:
        return (load_predictions(args.predictions, table, d["num_classes"]),
                dict(predictions=os.path.abspath(args.predictions), n_queries=len(table)))
    cache = args.api_cache or os.path.join(args.prob_dir, args.dataset, "api-cache.jsonl")
    client = Client(args.endpoint, cache, args.label_only, args.api_batch, args.max_qps, args.api_timeout,
                    args.api_retries, args.api_backoff)
    probs = client.ask(verifier.queries, table, d["num_classes"])
    return probs, dict(endpoint=args.endpoint, cache=cache, requests=client.sent, n_queries=len(table))
