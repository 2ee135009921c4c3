"""The answer cache of a suspect behind an API, keyed by what was asked and who answered (issue 32;
docs/API.md).

The key holds the endpoint (redacted), the schema and model name, the query set's digest, label-only
or not, and the suspect's name (--suspect-name). One JSONL line per answered query:
    {"key", "suspect", "endpoint", "id", "sha256", "t", "probs": [p or null, ...]}   or {..., "label": int}
(t: the request time, Unix seconds). Each batch's answers are checked before they are written, and
every write replaces the file atomically (other keys' lines kept); on reading, a line that is not
JSON (torn) or fails the checks is skipped with a warning, and its query is asked again. Before
cached answers are reused, a random sample of them is asked again: if any answer differs, the model
behind the URL has changed and the cache is refused.
"""
import hashlib
import json
import os
import random
import sys
import time

import numpy as np
from tqdm import tqdm

from . import answers
from .checkpoints import atomic_write
from .errors import UserError

RECHECK = 8       # cached queries asked again before a cache is reused (--api-recheck)
SAME_TOL = 1e-3   # largest |difference| of two answers of one model (float32 / GPU noise), plus one rounding unit


def key_of(endpoint, protocol, model_name, digest, label_only, suspect):
    """The cache key (a dict) and its 16-hex-digit id."""
    key = dict(endpoint=endpoint, protocol=protocol, model=model_name, queries=digest, label_only=bool(label_only),
               suspect=suspect)
    return key, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _age(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


class Cache:
    """The cache file `path` seen through one key (key_of)."""

    def __init__(self, path, key, kid):
        self.path, self.key, self.kid = path, key, kid
        self.others = []  # lines of other keys, kept verbatim

    def load(self, table, num_classes):
        """{query id: entry} of this key's valid entries whose pixels (sha256) are the table's."""
        self.others, out, torn, invalid = [], {}, 0, 0
        if not os.path.exists(self.path):
            return out
        rows = {r["id"]: r for r in table}
        with open(self.path, errors="replace") as f:
            for line in f:
                try:
                    e = json.loads(line)
                    mine = isinstance(e, dict) and e.get("key") == self.kid
                except (ValueError, RecursionError):
                    torn += 1
                    continue
                if not mine:
                    self.others.append(line if line.endswith("\n") else line + "\n")
                elif e.get("id") in rows and e.get("sha256") == rows[e["id"]]["sha256"] and _valid(e, num_classes):
                    out[e["id"]] = e
                else:
                    invalid += 1
        if torn:
            print(f"warning: {self.path}: skipped {torn} lines that are not complete JSON (a torn write?)",
                  file=sys.stderr)
        if invalid:
            print(f"warning: {self.path}: skipped {invalid} cached answers of this suspect that fail the checks or "
                  f"are not of these queries; they are asked again", file=sys.stderr)
        return out

    def save(self, entries):
        """Replace the file atomically: the other keys' lines, then `entries` (this key's)."""
        text = "".join(self.others) + "".join(json.dumps(e, allow_nan=False) + "\n" for e in entries.values())
        atomic_write(self.path, lambda tmp: open(tmp, "w").write(text))


def _valid(e, num_classes):
    if "label" in e:
        v = e["label"]
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < num_classes
    try:
        answers.validate([e.get("probs")], "cache", 1, num_classes)
        return isinstance(e.get("t"), (int, float))
    except UserError:
        return False


def entries(kind, data, js, table, cache):
    """Cache entries of one checked batch (Client.post's answer) for table rows js."""
    base = dict(key=cache.kid, suspect=cache.key["suspect"], endpoint=cache.key["endpoint"], t=round(time.time(), 3))
    if kind == "labels":
        return {table[j]["id"]: dict(base, id=table[j]["id"], sha256=table[j]["sha256"], label=int(data[k]))
                for k, j in enumerate(js)}
    v, g = data
    return {table[j]["id"]: dict(base, id=table[j]["id"], sha256=table[j]["sha256"],
                                 probs=[float(x) if ok else None for x, ok in zip(v[k], g[k])])
            for k, j in enumerate(js)}


def _vector(e, num_classes):
    if "label" in e:
        return np.eye(num_classes)[e["label"]]
    return np.array([0.0 if x is None else x for x in e["probs"]])


def recheck(client, cache, cached, q, table, num_classes, label_only, n):
    """Ask `n` cached queries, drawn at random (not from --seed), again; UserError if any answer
    differs. Returns the ids asked."""
    index = {r["id"]: j for j, r in enumerate(table)}
    sample = sorted(random.SystemRandom().sample(sorted(cached), min(n, len(cached))), key=index.get)
    js = [index[i] for i in sample]
    kind, data = client.post(q[js], f"{len(js)} cached queries asked again", len(js), num_classes, js[0], label_only)
    fresh = entries(kind, data, js, table, cache)
    d = answers.decimals([x for i in sample for x in cached[i].get("probs") or [] if x is not None])
    tol = SAME_TOL + (0 if d is None else 10.0 ** -d)
    diff = [(i, float(np.abs(_vector(cached[i], num_classes) - _vector(fresh[i], num_classes)).max())) for i in sample]
    diff = [(i, x) for i, x in diff if x > tol]
    if diff:
        age = _age(time.time() - min(cached[i]["t"] for i in sample))
        raise UserError(f"{client.shown} answers {len(diff)} of {len(sample)} cached queries differently than "
                        f"{age} ago (query {diff[0][0]}: largest difference {diff[0][1]:.3g}): the model behind the "
                        f"URL has changed, so the cache of suspect {cache.key['suspect']!r} in {cache.path} is not "
                        f"used; verify the new model under another --suspect-name, or pass --refresh to ask every "
                        f"query again as this suspect")
    return sample


def ask(client, cache, q, table, num_classes, *, label_only, batch, refresh=False, n_recheck=RECHECK):
    """The suspect's answers to the uint8 queries q (table order): cached ones (rechecked first), then
    the missing ones, asked in batches, checked, cached. Returns (raw float32 (Q, C), form, info):
    raw and form as answers.normalise (label-only: one-hot rows, form {}); info for the record, with
    "entries": the cache entries in table order."""
    cached = {} if refresh else cache.load(table, num_classes)
    info = dict(cache=cache.path, cache_key=cache.key, reused=len(cached), refreshed=bool(refresh), rechecked=[])
    if cached and n_recheck > 0:
        info["rechecked"] = recheck(client, cache, cached, q, table, num_classes, label_only, n_recheck)
    if cached:
        ts = [e["t"] for e in cached.values()]
        print(f"note: reusing {len(cached)} cached answers of suspect {cache.key['suspect']!r} from {cache.path} "
              f"(asked {_age(time.time() - min(ts))} to {_age(time.time() - max(ts))} ago); "
              f"{len(info['rechecked'])} asked again at random gave the same answers", file=sys.stderr)
    missing = [j for j, r in enumerate(table) if r["id"] not in cached]
    bar = tqdm(total=len(missing), desc=f"API {client.shown}", unit="img", leave=False)
    try:
        for s in range(0, len(missing), batch):
            js = missing[s:s + batch]
            what = f"queries {table[js[0]]['id']}..{table[js[-1]]['id']}"
            kind, data = client.post(q[js], what, len(js), num_classes, js[0], label_only)
            cached.update(entries(kind, data, js, table, cache))
            cache.save(cached)
            bar.update(len(js))
    except UserError as e:
        raise UserError(f"{e}; {len(cached)} of {len(table)} answers are kept in {cache.path}, and rerunning the "
                        f"same command asks only for the rest") from None
    finally:
        bar.close()
    ordered = [cached[r["id"]] for r in table]
    info["entries"] = ordered
    if label_only:
        labels = [e["label"] if "label" in e else int(np.argmax(_vector(e, num_classes))) for e in ordered]
        return np.eye(num_classes, dtype=np.float32)[labels], {}, info
    if any("label" in e for e in ordered):
        raise UserError(f"{cache.path} holds labels for suspect {cache.key['suspect']!r}; rerun with --label-only")
    v, g = answers.parse([e["probs"] for e in ordered], client.shown, len(table), num_classes)
    raw, form = answers.normalise(v, g, f"{client.shown} (all answers)")
    return raw, form, info
