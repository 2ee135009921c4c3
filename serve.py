"""Serve a checkpoint as a prediction API (an example, and the tests' server): our schema (docs/API.md)
and the Open Inference Protocol (KServe v2).

    python serve.py --checkpoint model/victim/vict-wrn16-1.pt --dataset fmnist --port 8000
    python serve.py --checkpoint model/victim/vict-wrn16-1.pt --dataset fmnist --port 8000 --label-only
    python serve.py --checkpoint model/victim/vict-wrn16-1.pt --dataset fmnist --decimals 2 --top-k 3

then  python ownership_verification.py --access black-box --endpoint http://127.0.0.1:8000/
 or   python ownership_verification.py --access black-box --endpoint http://127.0.0.1:8000 --api-protocol oip --model-name suspect

Our schema: POST (any path but /v2/...) {"images": ["<base64 PNG>", ...]} -> 200 {"probs": [[...], ...]}
(softmax; --decimals N rounds each value), --top-k K {"top": [[[class, p], ...], ...]} (the K best,
best first), --label-only {"labels": [int, ...]}.
OIP: POST /v2/models/<--model-name>/infer {"inputs": [{"name", "shape": [B, C, H, W], "datatype": "UINT8",
"data": [...]}]} -> {"model_name", "outputs": [{"name": "probs", "shape": [B, classes], "datatype": "FP32",
"data": [...]}]} (--top-k: the other classes 0; --label-only: "labels", INT64 [B]); GET /v2/health/ready,
GET /v2/models/<name> (metadata).

It cannot be tied up: --workers threads answer (a bounded pool; connections beyond --workers + --backlog
waiting get HTTP 503 at once), each connection must send its request within --conn-timeout seconds
(in all, not per byte) and is closed after one answer, a body may be at most one batch of --max-batch
images of its schema (HTTP 413 beyond), and every malformed request gets a 4xx with the reason. It
binds 127.0.0.1 unless --host says otherwise; the model answers one request at a time (a lock).
--fail-after N is a test aid: N requests are answered, every later one gets HTTP 503.
"""
import base64
import json
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import torch

from ownership import blackbox, cli
from ownership.checkpoints import load_model
from ownership.endpoint import decode_png
from ownership.errors import UserError
from ownership.presets import DATASETS

OIP_PREFIX = "/v2/"
_CONN = threading.local()  # the connection this worker thread serves: its request-deadline timer


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--checkpoint", required=True, help="the model to serve")
    p.add_argument("--model", default=None, help="its architecture, for a bare state_dict")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    p.add_argument("--label-only", action="store_true", help="answer top-1 labels instead of probabilities")
    p.add_argument("--decimals", type=int, default=None, help="round each probability to this many decimals, as many APIs do")
    p.add_argument("--top-k", type=int, default=None, help="answer only the K most probable classes")
    p.add_argument("--model-name", default="suspect", help="the model's name in the OIP path /v2/models/NAME/infer")
    p.add_argument("--workers", type=int, default=4, help="threads answering requests")
    p.add_argument("--backlog", type=int, default=16, help="accepted connections that may wait for a worker")
    p.add_argument("--conn-timeout", type=float, default=10.0, help="seconds a connection has to send its request")
    p.add_argument("--max-batch", type=int, default=256, help="most images in one request (sizes the body limit)")
    p.add_argument("--fail-after", type=int, default=None,
                   help="test aid: answer this many requests, then HTTP 503 to every later one")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return cli.add_common(p)


def body_limit(dataset, max_batch, oip):
    """Bytes of the largest valid request: `max_batch` images of `dataset` in our schema (base64 of a
    PNG no larger than the raw pixels plus 1 kB) or in OIP (up to 4 characters per UINT8 value)."""
    d = DATASETS[dataset]
    pixels = d["channels"] * d["size"] ** 2
    per_image = 4 * pixels + 8 if oip else (pixels + 1024) * 4 // 3 + 8
    return max_batch * per_image + 4096


class Handler(BaseHTTPRequestHandler):
    """Reads one bounded request, runs the server's model, answers. `answer` (our schema's JSON for
    uint8 images) is the part a test may override."""
    protocol_version = "HTTP/1.0"  # one request per connection

    def setup(self):
        self.timeout = self.server.conn_timeout  # per socket operation; _Watchdog bounds the whole request
        super().setup()

    def do_GET(self):
        name = self.server.model_name
        if self.path in (OIP_PREFIX + "health/ready", OIP_PREFIX + "health/live"):
            return self._send(200, {})
        if self.path == f"{OIP_PREFIX}models/{name}":
            d = DATASETS[self.server.dataset]
            out = ("labels", "INT64", [-1]) if self.server.label_only else ("probs", "FP32", [-1, d["num_classes"]])
            return self._send(200, {"name": name, "platform": "pytorch", "inputs": [
                {"name": "input", "datatype": "UINT8", "shape": [-1, d["channels"], d["size"], d["size"]]}],
                "outputs": [{"name": out[0], "datatype": out[1], "shape": out[2]}]})
        self._send(404, {"error": f"no such path {self.path[:80]!r}"})

    def do_POST(self):
        srv = self.server
        with srv.lock:
            srv.requests += 1
            failing = srv.fail_after is not None and srv.answered >= srv.fail_after
        if failing:
            return self._send(503, {"error": "failing on purpose (--fail-after)"})
        oip = self.path.startswith(OIP_PREFIX)
        if oip and self.path != f"{OIP_PREFIX}models/{srv.model_name}/infer":
            return self._send(404, {"error": f"no model at {self.path[:80]!r}; POST /v2/models/{srv.model_name}/infer"})
        body = self._body(body_limit(srv.dataset, srv.max_batch, oip))
        if body is None:
            return
        try:
            x = self._oip_images(body) if oip else self._images(body)
        except Exception as e:  # any malformed request is the client's: 400 with the reason
            return self._send(400, {"error": f"{e.__class__.__name__}: {str(e)[:200]}"})
        with srv.lock:  # one model, one request at a time
            out = self.answer(x)
            srv.answered += 1
        self._send(200, self._oip_answer(out, len(x)) if oip else out)

    def _body(self, limit):
        """The request body (bytes), or None after answering 411/413/408 (or a connection cut)."""
        if self.headers.get("Transfer-Encoding"):
            self._send(411, {"error": "send a Content-Length, not Transfer-Encoding"})
            return None
        n = self.headers.get("Content-Length", "")
        if not n.isdigit() or int(n) == 0:
            self._send(411, {"error": "a Content-Length of 1 or more bytes is required"})
            return None
        if int(n) > limit:
            self._send(413, {"error": f"body of {n} bytes; at most {limit} (--max-batch {self.server.max_batch} images)"})
            return None
        try:
            data = self.rfile.read(int(n))
        except OSError:
            data = b""
        if len(data) < int(n):
            self.close_connection = True  # shorter than declared: timed out or cut; nobody to answer
            return None
        timer = getattr(_CONN, "timer", None)
        if timer is not None:
            timer.cancel()  # the request is in; the model's time is not the client's to bound
        return data

    def _images(self, body):
        body = json.loads(body)
        images = body.get("images") if isinstance(body, dict) else None
        if not isinstance(images, list) or not images or not all(isinstance(s, str) for s in images):
            raise ValueError("\"images\" must be a non-empty list of base64 strings")
        return self._check(torch.stack([decode_png(base64.b64decode(s, validate=True), *self._shape()) for s in images]))

    def _oip_images(self, body):
        body = json.loads(body)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise ValueError("\"inputs\" must be a list of one tensor")
        t = inputs[0]
        c, size = self._shape()
        shape = t.get("shape")
        if t.get("datatype") != "UINT8" or not isinstance(shape, list) or len(shape) != 4 or shape[1:] != [c, size, size] \
                or not isinstance(shape[0], int) or shape[0] < 1:
            raise ValueError(f"the input must be UINT8 of shape [B, {c}, {size}, {size}]")
        data = np.asarray(t.get("data"))
        if data.dtype.kind not in "iu" or data.size != int(np.prod(shape)) or data.min() < 0 or data.max() > 255:
            raise ValueError(f"\"data\" must hold {int(np.prod(shape))} integers 0..255")
        return self._check(torch.from_numpy(data.astype(np.uint8).reshape(shape)))

    def _shape(self):
        d = DATASETS[self.server.dataset]
        return d["channels"], d["size"]

    def _check(self, x):
        if len(x) > self.server.max_batch:
            raise ValueError(f"{len(x)} images; at most --max-batch {self.server.max_batch} per request")
        return x

    def answer(self, x):
        """Our schema's JSON answer for uint8 images x (B, C, H, W), as --label-only, --decimals, --top-k say."""
        srv = self.server
        p = blackbox.model_probs(srv.model, x, srv.dataset, srv.device).double().numpy()
        if srv.label_only:
            return {"labels": p.argmax(1).tolist()}
        order = np.argsort(-p, axis=1, kind="stable")[:, :srv.top_k or p.shape[1]]  # the best, at full precision
        if srv.decimals is not None:
            p = np.round(p, srv.decimals)
        if srv.top_k:
            return {"top": [[[int(c), float(row[c])] for c in cs] for row, cs in zip(p, order)]}
        return {"probs": p.tolist()}

    def _oip_answer(self, out, n):
        """Our schema's answer as OIP typed tensors (top-k: the other classes 0)."""
        if "labels" in out:
            t = {"name": "labels", "datatype": "INT64", "shape": [n], "data": out["labels"]}
        else:
            c = DATASETS[self.server.dataset]["num_classes"]
            p = np.zeros((n, c))
            if "top" in out:
                for i, row in enumerate(out["top"]):
                    for k, v in row:
                        p[i, k] = v
            else:
                p[:] = out["probs"]
            t = {"name": "probs", "datatype": "FP32", "shape": [n, c], "data": p.reshape(-1).tolist()}
        return {"model_name": self.server.model_name, "outputs": [t]}

    def _send(self, code, obj):
        data = json.dumps(obj, allow_nan=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def log_message(self, fmt, *a):
        if self.server.verbose:
            super().log_message(fmt, *a)


class PoolServer(HTTPServer):
    """HTTPServer with a bounded pool of worker threads: a connection beyond `workers` busy and
    `backlog` waiting is answered 503 and closed at once; each connection's request must arrive within
    `conn_timeout` seconds in all (a timer shuts its socket down after that)."""

    def __init__(self, address, handler, workers=4, backlog=16, conn_timeout=10.0):
        super().__init__(address, handler)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serve")
        self.slots = threading.BoundedSemaphore(workers + backlog)
        self.conn_timeout = conn_timeout

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            return self.shutdown_request(request)
        self.pool.submit(self._work, request, client_address)

    def _work(self, request, client_address):
        timer = threading.Timer(self.conn_timeout, _shutdown, (request,))
        timer.daemon = True
        timer.start()
        _CONN.timer = timer
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            timer.cancel()
            self.shutdown_request(request)
            self.slots.release()

    def handle_error(self, request, client_address):
        if getattr(self, "verbose", False):
            super().handle_error(request, client_address)

    def server_close(self):
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def make_server(model, dataset, host="127.0.0.1", port=0, label_only=False, fail_after=None, device="cpu",
                handler=Handler, verbose=False, *, decimals=None, top_k=None, model_name="suspect", workers=4,
                backlog=16, conn_timeout=10.0, max_batch=256):
    """A PoolServer serving `model` (call serve_forever). Its counters `requests` (POSTs received) and
    `answered` (200 answers), and `fail_after`, may be read and set while it runs."""
    srv = PoolServer((host, port), handler, workers, backlog, conn_timeout)
    srv.model, srv.dataset, srv.device, srv.label_only = model.eval(), dataset, device, label_only
    srv.decimals, srv.top_k, srv.model_name, srv.max_batch = decimals, top_k, model_name, max_batch
    srv.fail_after, srv.verbose, srv.requests, srv.answered = fail_after, verbose, 0, 0
    srv.lock = threading.Lock()
    return srv


def main(args):
    for flag, v, low in (("--decimals", args.decimals, 0), ("--top-k", args.top_k, 1), ("--workers", args.workers, 1),
                         ("--backlog", args.backlog, 0), ("--max-batch", args.max_batch, 1)):
        if v is not None and v < low:
            raise UserError(f"{flag} {v} must be at least {low}")
    if args.conn_timeout <= 0:
        raise UserError(f"--conn-timeout {args.conn_timeout} must be > 0")
    device = cli.get_device(args.gpu)
    d = DATASETS[args.dataset]
    model, ck = load_model(args.checkpoint, args.model, d["num_classes"], d["channels"], device, "model to serve")
    if ck.get("dataset") not in (None, args.dataset):
        raise UserError(f"{args.checkpoint} was trained on {ck['dataset']}; pass --dataset {ck['dataset']}")
    try:
        srv = make_server(model, args.dataset, args.host, args.port, args.label_only, args.fail_after, device,
                          verbose=args.verbose, decimals=args.decimals, top_k=args.top_k, model_name=args.model_name,
                          workers=args.workers, backlog=args.backlog, conn_timeout=args.conn_timeout,
                          max_batch=args.max_batch)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror}); choose another --port") from None
    host, port = srv.server_address[:2]
    print(f"serving {args.checkpoint} ({'labels' if args.label_only else 'probabilities'}) on http://{host}:{port}/ "
          f"and OIP /v2/models/{args.model_name}/infer", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        srv.server_close()


if __name__ == "__main__":
    cli.run(main, get_parser())
