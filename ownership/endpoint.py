"""The HTTP client of a suspect's prediction API (issue 16, issue 32; docs/API.md). The server is the
suspect's ground, so every answer is hostile input and every request is bounded:

- an overall deadline per request (--api-deadline), besides the connect and read timeouts: a
  watchdog shuts the request's sockets down when it passes, and the clock is read between chunks;
- a maximum decoded body size (--api-max-bytes; gzip/deflate are counted after decoding, and
  urllib3 >= 2.6 decodes at most one chunk at a time);
- no redirects: a 3xx is an error naming its target;
- credentials in the URL are redacted in every output (`redact`); --api-auth-env and ~/.netrc give
  them through requests' own support instead.

Two schemas (constants.API_PROTOCOLS): "move" (ours: {"images": [base64 PNG]} -> {"probs"|"top"|"labels"})
and "oip", the Open Inference Protocol (KServe v2: POST <endpoint>/v2/models/<name>/infer with typed
tensors; the input is the uint8 images, UINT8 [B, C, H, W]).
"""
import base64
import io
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse

import numpy as np
import requests
import torch
import urllib3
from PIL import Image
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import answers
from .errors import UserError

CHUNK = 16 << 10          # bytes read (decoded) between two looks at the clock
SNIPPET = 100             # characters of an error body quoted in a message
SECRET = re.compile(r"key|token|secret|pass|pwd|auth|sig|credential|session", re.I)  # query parameters redacted


# ----------------------------------------------------------------------------- URLs
def redact(url):
    """`url` with its user:password and the values of secret-looking query parameters replaced by ***."""
    try:
        u = urllib.parse.urlsplit(url)
        host = u.hostname or ""
        port = f":{u.port}" if u.port else ""
    except ValueError:
        return "<an unparseable URL>"
    netloc = ("***@" if "@" in u.netloc else "") + (f"[{host}]" if ":" in host else host) + port
    query = "&".join(f"{k}={'***' if SECRET.search(k) else v}" if v or not SECRET.search(k) else k
                     for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, query, ""))


def check_url(url):
    """A one-line UserError for a URL requests cannot ask (no scheme, not http(s), no host)."""
    shown = redact(url)
    try:
        u = urllib.parse.urlsplit(url)
        u.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as e:
        raise UserError(f"--endpoint {shown} is not a URL ({e}); give e.g. http://127.0.0.1:8000/") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise UserError(f"--endpoint {shown} is not an http:// or https:// URL with a host; give e.g. "
                        f"http://{url if '://' not in url else '127.0.0.1:8000/'}")
    if "@" in u.netloc:
        print("note: --endpoint holds credentials; they are redacted in every output, but the shell history keeps "
              "them: put them in ~/.netrc, or in an environment variable named by --api-auth-env", file=sys.stderr)


def auth_from_env(name):
    """requests auth for --api-auth-env NAME: the variable holds 'user:password' (HTTP Basic) or
    'Bearer <token>'; None for no NAME (requests then reads ~/.netrc, or $NETRC, itself)."""
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise UserError(f"--api-auth-env {name}: the environment variable {name} is not set or empty; export it "
                        f"as user:password or 'Bearer <token>'")
    if value.startswith("Bearer "):
        return _Bearer(value)
    if ":" not in value:
        raise UserError(f"--api-auth-env {name}: its value is neither user:password nor 'Bearer <token>'")
    return requests.auth.HTTPBasicAuth(*value.split(":", 1))


class _Bearer(requests.auth.AuthBase):
    def __init__(self, value):
        self.value = value

    def __call__(self, r):
        r.headers["Authorization"] = self.value
        return r


# ----------------------------------------------------------------------------- deadline
_CURRENT = threading.local()  # the request in flight on this thread: its _Deadline


class _Tracked:
    """A urllib3 connection that hands its socket to the request's deadline watchdog."""

    def connect(self):
        super().connect()
        dl = getattr(_CURRENT, "deadline", None)
        if dl is not None:
            dl.track(self.sock)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = type("TrackedHTTPConnection", (_Tracked, HTTPConnection), {})


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = type("TrackedHTTPSConnection", (_Tracked, HTTPSConnection), {})


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *a, **kw):
        super().init_poolmanager(*a, **kw)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class _Deadline:
    """At `seconds` from now (real time), shut down every socket the request opened; `late()` is True
    once the deadline has passed by `clock` (which tests may fake)."""

    def __init__(self, seconds, clock):
        self.clock, self.end, self.fired, self.socks = clock, clock() + seconds, False, []
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def track(self, sock):
        with self.lock:
            self.socks.append(sock)
            if self.fired:
                _shutdown(sock)

    def _fire(self):
        with self.lock:
            self.fired = True
            for s in self.socks:
                _shutdown(s)

    def late(self):
        return self.fired or self.clock() > self.end

    def __enter__(self):
        _CURRENT.deadline = self
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        _CURRENT.deadline = None


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Transient(Exception):
    """A failure worth retrying (timeouts, cut connections, HTTP 429/5xx); its text says which."""


# ----------------------------------------------------------------------------- schemas
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


class Move:
    """Our schema (docs/API.md, version 1)."""
    name = "move"

    def url(self, endpoint):
        return endpoint

    def request(self, x):
        return json.dumps({"images": [base64.b64encode(png_bytes(i)).decode("ascii") for i in x]}).encode()

    def answer(self, obj, source, n, num_classes, first, label_only):
        """("labels", int64 (n,)) or ("probs", (values, given)) of one answer, checked (answers.py)."""
        if not isinstance(obj, dict):
            raise UserError(f"{source}: the answer is a JSON {type(obj).__name__}, not an object with \"probs\", "
                            f"\"top\" or \"labels\"; the endpoint must follow the schema of docs/API.md")
        if "labels" in obj:
            if not label_only:
                raise UserError(f"{source}: the endpoint answers labels only; rerun with --label-only")
            return "labels", answers.validate_labels(obj["labels"], source, n, num_classes, first)
        key = "probs" if "probs" in obj else "top" if "top" in obj else None
        if key is None:
            raise UserError(f"{source}: no \"probs\", \"top\" or \"labels\" in the answer (keys: "
                            f"{', '.join(map(str, list(obj)[:5]))[:60]}); the endpoint must follow the schema of docs/API.md")
        return "probs", answers.validate(obj[key], source, n, num_classes, first)


OIP_FLOAT = {"FP16", "FP32", "FP64", "BF16"}
OIP_INT = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}


class OIP:
    """The Open Inference Protocol (KServe v2 REST): POST <endpoint>/v2/models/<model>/infer,
    {"inputs": [{"name", "shape": [B, C, H, W], "datatype": "UINT8", "data": [...]}]} -> {"outputs":
    [{"name", "shape", "datatype", "data"}]}; the output (named, else the first) is FP probabilities
    [B, C] or INT labels [B] / [B, 1]."""
    name = "oip"

    def __init__(self, model, input_name="input", output_name=None):
        self.model, self.input_name, self.output_name = model, input_name, output_name

    def url(self, endpoint):
        return endpoint.rstrip("/") + f"/v2/models/{urllib.parse.quote(self.model, safe='')}/infer"

    def request(self, x):
        return json.dumps({"inputs": [{"name": self.input_name, "shape": list(x.shape), "datatype": "UINT8",
                                       "data": x.reshape(-1).tolist()}]}).encode()

    def _output(self, obj, source):
        outs = obj.get("outputs") if isinstance(obj, dict) else None
        if not isinstance(outs, list) or not outs or not all(isinstance(o, dict) for o in outs):
            raise UserError(f"{source}: no \"outputs\" list of tensors in the answer; the endpoint must speak the "
                            f"Open Inference Protocol (KServe v2)")
        names = [str(o.get("name"))[:40] for o in outs]
        if self.output_name is None:
            return outs[0]
        if self.output_name not in names:
            raise UserError(f"{source}: no output named {self.output_name!r} (outputs: {', '.join(names)}); pass "
                            f"--oip-output with one of them")
        return outs[names.index(self.output_name)]

    def answer(self, obj, source, n, num_classes, first, label_only):
        out = self._output(obj, source)
        dtype, shape, data = out.get("datatype"), out.get("shape"), out.get("data")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 1 << 31
                                                  for s in shape):
            raise UserError(f"{source}: the output's \"shape\" is not a list of sizes")
        if dtype not in OIP_FLOAT | OIP_INT:
            raise UserError(f"{source}: output datatype {str(dtype)[:20]!r}; give FP32 probabilities or INT64 labels")
        flat = _flatten(data, source)
        if len(flat) != int(np.prod(shape, dtype=np.float64)):
            raise UserError(f"{source}: the output holds {len(flat)} values but its shape {shape} needs "
                            f"{int(np.prod(shape, dtype=np.float64))}")
        if dtype in OIP_INT and shape in ([n], [n, 1]):
            if not label_only:
                raise UserError(f"{source}: the endpoint answers labels only; rerun with --label-only")
            return "labels", answers.validate_labels(flat, source, n, num_classes, first)
        if dtype not in OIP_FLOAT:
            raise UserError(f"{source}: an integer output of shape {shape}; labels are [{n}] or [{n}, 1]")
        if shape != [n, num_classes]:
            raise UserError(f"{source}: output of shape {shape}, expected [{n}, {num_classes}]: one probability per "
                            f"class for each image")
        try:
            rows = np.asarray([answers._number(x) for x in flat], np.float64).reshape(n, num_classes)
        except (TypeError, OverflowError) as e:
            raise UserError(f"{source}: output values are not finite numbers ({str(e)[:60]})") from None
        return "probs", answers.validate(rows, source, n, num_classes, first)


def _flatten(data, source, depth=0):
    """The row-major values of an OIP "data" field, flat or nested lists (bounded depth)."""
    if not isinstance(data, list) or depth > 8:
        raise UserError(f"{source}: the output's \"data\" is not a (nested) list of numbers")
    if all(not isinstance(x, list) for x in data):
        return data
    return [y for x in data for y in _flatten(x, source, depth + 1)]


def schema(protocol, model_name=None, input_name="input", output_name=None):
    """The schema object for --api-protocol."""
    if protocol == "oip":
        if not model_name:
            raise UserError("--api-protocol oip needs --model-name NAME: the model's name in /v2/models/NAME/infer")
        return OIP(model_name, input_name, output_name)
    return Move()


# ----------------------------------------------------------------------------- client
class Client:
    """Posts batches of queries to one endpoint under one schema, within the bounds of the module
    docstring. `clock` and `sleep` may be faked by tests; `sent` counts requests."""

    def __init__(self, endpoint, schema, *, timeout=60.0, deadline=120.0, max_bytes=16 << 20, retries=5,
                 backoff=1.0, max_qps=10.0, auth=None, clock=time.monotonic, sleep=time.sleep):
        self.endpoint, self.schema, self.url = endpoint, schema, schema.url(endpoint)
        self.shown = redact(self.url)
        self.timeout, self.deadline, self.max_bytes = timeout, deadline, max_bytes
        self.retries, self.backoff, self.max_qps = retries, backoff, max_qps
        self.clock, self.sleep = clock, sleep
        self.session = requests.Session()
        self.session.mount("http://", _Adapter())
        self.session.mount("https://", _Adapter())
        if auth is not None:
            self.session.auth = auth
        self._next, self.sent = 0.0, 0

    def _wait(self):
        if self.max_qps > 0:
            now = self.clock()
            if now < self._next:
                self.sleep(self._next - now)
            self._next = max(now, self._next) + 1.0 / self.max_qps

    def post(self, x, what, n, num_classes, first, label_only):
        """The checked answer to the uint8 images x (B, C, H, W): ("labels", ...) or ("probs", (values,
        given)). Retries timeouts, cut connections, the deadline, HTTP 429 and 5xx with exponential
        backoff; every other failure is a one-line UserError naming the (redacted) URL."""
        body, err = self.schema.request(x), None
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            self._wait()
            self.sent += 1
            try:
                obj = self._once(body, what)
            except _Transient as e:
                err = str(e)
                continue
            return self.schema.answer(obj, f"{self.shown} (answer to {what})", n, num_classes, first, label_only)
        raise UserError(f"{self.shown}: no answer to {what} after {self.retries + 1} tries ({err})")

    def _once(self, body, what):
        with _Deadline(self.deadline, self.clock) as dl:
            try:
                r = self.session.post(self.url, data=body, timeout=(self.timeout, self.timeout), stream=True,
                                      allow_redirects=False, headers={"Content-Type": "application/json",
                                                                      "Connection": "close"})
                try:
                    data = self._body(r, dl, what)
                finally:
                    r.close()
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                if dl.late():
                    raise _Transient(f"no complete answer within --api-deadline {self.deadline:g} s") from None
                raise _Transient(e.__class__.__name__) from None
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as e:
            raise UserError(f"{self.shown}: the answer to {what} is not JSON ({e.__class__.__name__}: "
                            f"{str(e)[:60]}; starts {data[:40]!r}); the endpoint must follow the schema of "
                            f"docs/API.md") from None

    def _body(self, r, dl, what):
        """The decoded body of a 200 answer, bounded in size and time; 3xx/4xx are UserErrors,
        429/5xx _Transient."""
        code = r.status_code
        if 300 <= code < 400:
            target = redact(r.headers.get("Location", "")) if r.headers.get("Location") else "no Location"
            raise UserError(f"{self.shown} redirected {what} (HTTP {code}) to {target[:120]}; redirects are not "
                            f"followed (they could send the queries elsewhere): pass that URL as --endpoint if you "
                            f"trust it")
        if code == 429 or code >= 500:
            raise _Transient(f"HTTP {code}")
        size = r.headers.get("Content-Length", "")
        if size.isdigit() and int(size) > self.max_bytes:
            raise UserError(f"{self.shown}: the answer to {what} is {int(size)} bytes, more than --api-max-bytes "
                            f"{self.max_bytes}; raise --api-max-bytes if that is a real answer, or lower --api-batch")
        buf = bytearray()
        for chunk in r.raw.stream(CHUNK, decode_content=True):
            buf += chunk
            if len(buf) > self.max_bytes:
                raise UserError(f"{self.shown}: the answer to {what} exceeds --api-max-bytes {self.max_bytes} "
                                f"(decoded); raise --api-max-bytes if that is a real answer, or lower --api-batch")
            if dl.late():
                raise _Transient(f"no complete answer within --api-deadline {self.deadline:g} s")
            if code != 200 and len(buf) >= 4 * SNIPPET:
                break
        if dl.late():
            raise _Transient(f"no complete answer within --api-deadline {self.deadline:g} s")
        if code != 200:
            text = bytes(buf[:SNIPPET]).decode("utf-8", "replace")
            raise UserError(f"{self.shown} refused {what}: HTTP {code} {text!r}; check the URL, --api-protocol and "
                            f"the schema of docs/API.md")
        return bytes(buf)
