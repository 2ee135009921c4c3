"""Every JSON the project writes, valid by RFC 8259: no NaN, no Infinity.

`dumps` turns numpy scalars and arrays into plain numbers and lists and every non-finite float into
null (a statistic that is undefined, e.g. the t of a test whose differences are all equal), then
serialises with allow_nan=False, so a stray non-finite value fails loudly instead of writing a file
that strict parsers reject.
"""
import json
import os
import math

import numpy as np

from .checkpoints import atomic_write


def finite(obj):
    """`obj` with numpy values made plain and non-finite floats replaced by None (recursively)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj, **kw):
    """Strict JSON text of `obj` (see the module docstring); keyword arguments go to json.dumps."""
    return json.dumps(finite(obj), allow_nan=False, **kw)


def write(path, obj):
    """Write `obj` as strict, indented JSON to `path`, atomically."""
    text = dumps(obj, indent=1)
    atomic_write(path, lambda tmp: open(tmp, "w").write(text + "\n"))


def first_free(stem):
    """The first of stem.json, stem-2.json, stem-3.json ... that does not exist: a results file that never
    replaces another run's."""
    k, path = 1, stem + ".json"
    while os.path.exists(path):
        k += 1
        path = f"{stem}-{k}.json"
    return path

