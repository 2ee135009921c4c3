"""Black-box verification of a suspect behind a prediction API: queries out, predictions in, no
weights (issue 16, issue 32; docs/API.md). Used by ownership_verification.py (--export-queries,
--predictions, --endpoint) and serve.py.

The queries are blackbox.queries(): for each of the N stylised test images, its original x, then the
views v_0 (the stylised image) .. v_{K-1}, uint8, image-major; query ids are "<image:05d>-<view>"
("00012-x", "00012-v0" ...). The answers (one probability vector per query) go through
blackbox.features_from_probs and the per-dataset black-box meta-classifier blackbox-<dataset>.pt, and
are tested against the held-out benign references of every architecture, queried with the same images
on their weights.

The answers' schema and their checks: ownership/answers.py; the HTTP client and its bounds:
ownership/endpoint.py; the cache: ownership/answer_cache.py; the evidence record: ownership/evidence.py.
"""
import hashlib
import json
import os
import re
import sys

from tqdm import tqdm

from . import answer_cache, blackbox, endpoint, jsonio, paths
from . import answers as checks  # (answers() below is the API path's entry point)
from .checkpoints import load_checkpoint
from .constants import API_PROTOCOLS
from .data import load_styled
from .endpoint import decode_png, png_bytes  # noqa: F401  (serve.py and older callers import them from here)
from .errors import UserError
from .presets import DATASETS

SCHEMA = 1
DEFAULT_VIEWS = 4  # train_clf.py's default, for exports made before the classifier exists
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a --suspect-name: names files, so no path or shell syntax


# ----------------------------------------------------------------------------- command line
def add_arguments(p):
    """The API flags of ownership_verification.py."""
    g = p.add_argument_group("black-box verification through a prediction API (docs/API.md)")
    g.add_argument("--export-queries", metavar="DIR", default=None,
                   help="write every query image as DIR/<id>.png and DIR/queries.json (their order), then stop")
    g.add_argument("--predictions", metavar="FILE", default=None,
                   help="the API's answers, one per query in queries.json order: .npy, .csv (optional header; a "
                        "first column 'id' gives ids) or .jsonl lines {\"id\", \"probs\" | \"top\" | \"label\"}")
    g.add_argument("--queries", metavar="DIR", default=None,
                   help="with --predictions: check that DIR/queries.json (the export) are this run's queries")
    g.add_argument("--endpoint", metavar="URL", default=None, help="ask an HTTP prediction API (schema in docs/API.md)")
    g.add_argument("--suspect-name", metavar="NAME", default=None,
                   help="the suspect's name: part of the answer cache's key, and names the result files "
                        "(default: the predictions file's name, or 'endpoint'); letters, digits, . _ -")
    g.add_argument("--api-protocol", default="move", choices=API_PROTOCOLS,
                   help="move: our schema (docs/API.md); oip: the Open Inference Protocol (KServe v2, Triton, "
                        "TorchServe, MLServer): POST <URL>/v2/models/<--model-name>/infer")
    g.add_argument("--model-name", metavar="NAME", default=None, help="--api-protocol oip: the model's name on the server")
    g.add_argument("--oip-input", metavar="NAME", default="input",
                   help="--api-protocol oip: the input tensor's name (UINT8 [B, C, H, W])")
    g.add_argument("--oip-output", metavar="NAME", default=None,
                   help="--api-protocol oip: the output tensor to read (default: the first)")
    g.add_argument("--label-only", action="store_true",
                   help="use only the top label of each answer (one-hot vectors), for APIs that return labels")
    g.add_argument("--api-batch", type=int, default=64, help="images per request")
    g.add_argument("--max-qps", type=float, default=10.0, help="at most this many requests per second (0: no limit)")
    g.add_argument("--api-timeout", type=float, default=60.0, help="seconds to connect, and between two bytes of an answer")
    g.add_argument("--api-deadline", type=float, default=120.0, help="seconds one request may take in all")
    g.add_argument("--api-max-bytes", type=int, default=16 << 20,
                   help="largest answer accepted, in bytes after gzip/deflate decoding (default 16 MiB)")
    g.add_argument("--api-retries", type=int, default=5, help="retries of a failed request (backoff 1, 2, 4 ... x --api-backoff)")
    g.add_argument("--api-backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each retry")
    g.add_argument("--api-auth-env", metavar="VAR", default=None,
                   help="environment variable holding user:password (HTTP Basic) or 'Bearer <token>' (default: "
                        "~/.netrc, read by requests)")
    g.add_argument("--api-cache", metavar="FILE", default=None,
                   help="JSONL cache of the answers (default: <prob-dir>/<dataset>/api-cache-<suspect name>.jsonl); "
                        "a rerun with the same key asks only for queries it does not hold")
    g.add_argument("--api-recheck", type=int, default=answer_cache.RECHECK,
                   help="cached queries asked again, at random, before the cache is reused (0: none)")
    g.add_argument("--refresh", action="store_true", help="ignore cached answers of this suspect: ask every query again")
    return p


def requested(args):
    """Whether the command goes through the API path (no suspect checkpoint)."""
    return any(getattr(args, k, None) for k in ("export_queries", "predictions", "endpoint"))


def check_args(args):
    """The API flags exclude each other and a suspect checkpoint; their numbers are in range; the
    endpoint is an http(s) URL; the suspect's name is a plain file name."""
    given = [f for f, k in (("--export-queries", "export_queries"), ("--predictions", "predictions"),
                            ("--endpoint", "endpoint")) if getattr(args, k)]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} exclude each other: export the queries, then verify from a "
                        f"predictions file or from an endpoint")
    if getattr(args, "suspect", None) or getattr(args, "model", None):
        raise UserError(f"--s/--model name a suspect checkpoint, but with {given[0]} the suspect is the API: drop them")
    if args.api_batch < 1:
        raise UserError(f"--api-batch {args.api_batch} must be at least 1")
    if args.max_qps < 0 or args.api_retries < 0 or args.api_timeout <= 0 or args.api_backoff < 0 \
            or args.api_deadline <= 0 or args.api_max_bytes < 1 or args.api_recheck < 0:
        raise UserError("--max-qps, --api-retries, --api-backoff and --api-recheck must be >= 0, --api-timeout, "
                        "--api-deadline and --api-max-bytes > 0")
    if args.suspect_name is not None and not NAME.fullmatch(args.suspect_name):
        raise UserError(f"--suspect-name {args.suspect_name[:70]!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
                        f"starting with a letter or digit (it names files)")
    if args.endpoint:
        endpoint.check_url(args.endpoint)
        endpoint.schema(args.api_protocol, args.model_name)


def suspect_name(args):
    """The suspect's name: --suspect-name, else the predictions file's name (made safe), else 'endpoint'."""
    if args.suspect_name:
        return args.suspect_name
    if args.predictions:
        return re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(args.predictions)).lstrip(".")[:64] or "predictions"
    return "endpoint"


def identity(args):
    """Who the suspect is, for result files and records: the predictions file, or name at (redacted) URL."""
    if args.predictions:
        return os.path.abspath(args.predictions)
    return f"{suspect_name(args)} at {endpoint.redact(args.endpoint)}"


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
    """The suspect's answers to `verifier.queries`, from --predictions or --endpoint: (raw float32 (Q,
    num_classes), form (checks.normalise; {} for labels), a dict saying where they came from, the rows
    as received in table order for the evidence record)."""
    if verifier.access != "black-box":
        raise UserError(f"{verifier.clf_path} is a {verifier.access} meta-classifier; an API gives predictions only: "
                        f"use a black-box one ('python train_clf.py --access black-box --dataset {args.dataset}')")
    d = DATASETS[args.dataset]
    n = d["num_classes"]
    views = verifier.clf["views"]
    table = query_table(verifier.queries, verifier.images, views)
    meta = _meta(args, views, verifier.images, verifier.queries)
    if args.queries:
        check_queries_json(args.queries, meta)
    if args.predictions:
        kind, data = checks.load(args.predictions, table, n, args.label_only)
        if kind == "labels":
            raw, form = blackbox.one_hot(data, n).numpy(), {}
        else:
            raw, form = checks.normalise(*data, args.predictions)
        source = dict(predictions=os.path.abspath(args.predictions), n_queries=len(table))
        return raw, ({} if args.label_only else form), source, None
    return ask_endpoint(args, verifier.queries, table, meta["digest"], n)


def ask_endpoint(args, q, table, digest, num_classes):
    """--endpoint: the answers to the uint8 queries q (table order; `digest` their sha256), through the
    answer cache. Returns (raw, form, source, rows) as `answers`."""
    schema = endpoint.schema(args.api_protocol, args.model_name, args.oip_input, args.oip_output)
    client = endpoint.Client(args.endpoint, schema, timeout=args.api_timeout, deadline=args.api_deadline,
                             max_bytes=args.api_max_bytes, retries=args.api_retries, backoff=args.api_backoff,
                             max_qps=args.max_qps, auth=endpoint.auth_from_env(args.api_auth_env))
    name = suspect_name(args)
    key, kid = answer_cache.key_of(endpoint.redact(args.endpoint), args.api_protocol, args.model_name, digest,
                                   args.label_only, name)
    path = args.api_cache or os.path.join(args.prob_dir, args.dataset, f"api-cache-{name}.jsonl")
    cache = answer_cache.Cache(path, key, kid)
    raw, form, info = answer_cache.ask(client, cache, q, table, num_classes, label_only=args.label_only,
                                       batch=args.api_batch, refresh=args.refresh, n_recheck=args.api_recheck)
    rows = [dict(id=r["id"], **{k: e[k] for k in ("probs", "label") if k in e})
            for r, e in zip(table, info.pop("entries"))]
    source = dict(endpoint=endpoint.redact(args.endpoint), api_protocol=args.api_protocol, model_name=args.model_name,
                  requests=client.sent, n_queries=len(table), **info)
    return raw, form, source, rows


def note_form(form, num_classes):
    """Print the one note on rounded / top-k answers (checks.describe), if any."""
    text = checks.describe(form, num_classes)
    if text:
        print(f"note: {text}", file=sys.stderr)
