"""Serve a checkpoint as a prediction API under the schema of docs/API.md (an example, and the tests' server).

    python serve.py --checkpoint model/victim/vict-wrn16-1.pt --dataset fmnist --port 8000
    python serve.py --checkpoint model/victim/vict-wrn16-1.pt --dataset fmnist --port 8000 --label-only

then  python ownership_verification.py --access black-box --endpoint http://127.0.0.1:8000/

POST (any path) {"images": ["<base64 PNG>", ...]} -> 200 {"probs": [[...], ...]} (softmax, float32 values),
or with --label-only {"labels": [int, ...]}; a bad request -> 400 {"error": "..."}. Python's
http.server (ThreadingHTTPServer) on 127.0.0.1 only; requests are answered one at a time (a lock).
--fail-after N is a test aid: N requests are answered, every later one gets HTTP 503.
"""
import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from ownership import blackbox, cli
from ownership.api import decode_png
from ownership.checkpoints import load_model
from ownership.errors import UserError
from ownership.presets import DATASETS

MAX_BODY = 256 << 20  # bytes of one request


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--checkpoint", required=True, help="the model to serve")
    p.add_argument("--model", default=None, help="its architecture, for a bare state_dict")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    p.add_argument("--label-only", action="store_true", help="answer {\"labels\": [...]} (top-1) instead of probabilities")
    p.add_argument("--fail-after", type=int, default=None,
                   help="test aid: answer this many requests, then HTTP 503 to every later one")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return cli.add_common(p)


class Handler(BaseHTTPRequestHandler):
    """Decodes the images, runs the server's model, answers. `answer` is the part a test may override."""

    def do_POST(self):
        srv = self.server
        with srv.lock:
            srv.requests += 1
            failing = srv.fail_after is not None and srv.answered >= srv.fail_after
        if failing:
            return self._send(503, {"error": "failing on purpose (--fail-after)"})
        try:
            n = int(self.headers.get("Content-Length") or 0)
            if not 0 < n <= MAX_BODY:
                return self._send(413 if n else 411, {"error": f"body of {n} bytes; send 1 to {MAX_BODY}"})
            body = json.loads(self.rfile.read(n))
            images = body["images"]
            if not isinstance(images, list) or not images:
                raise ValueError("\"images\" must be a non-empty list")
            d = DATASETS[srv.dataset]
            x = torch.stack([decode_png(base64.b64decode(s, validate=True), d["channels"], d["size"]) for s in images])
        except Exception as e:  # any malformed request is the client's: 400 with the reason
            return self._send(400, {"error": f"{e.__class__.__name__}: {e}"})
        with srv.lock:  # one model, one request at a time
            out = self.answer(x)
            srv.answered += 1
        self._send(200, out)

    def answer(self, x):
        """The JSON answer for uint8 images x (B, C, H, W)."""
        srv = self.server
        p = blackbox.model_probs(srv.model, x, srv.dataset, srv.device)
        return {"labels": p.argmax(1).tolist()} if srv.label_only else {"probs": p.tolist()}

    def _send(self, code, obj):
        data = json.dumps(obj, allow_nan=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *a):
        if self.server.verbose:
            super().log_message(fmt, *a)


def make_server(model, dataset, host="127.0.0.1", port=0, label_only=False, fail_after=None, device="cpu",
                handler=Handler, verbose=False):
    """A ThreadingHTTPServer serving `model` (call serve_forever). Its counters `requests` (POSTs
    received) and `answered` (200 answers), and `fail_after`, may be read and set while it runs."""
    srv = ThreadingHTTPServer((host, port), handler)
    srv.daemon_threads = True
    srv.model, srv.dataset, srv.device, srv.label_only = model.eval(), dataset, device, label_only
    srv.fail_after, srv.verbose, srv.requests, srv.answered = fail_after, verbose, 0, 0
    srv.lock = threading.Lock()
    return srv


def main(args):
    device = cli.get_device(args.gpu)
    d = DATASETS[args.dataset]
    model, ck = load_model(args.checkpoint, args.model, d["num_classes"], d["channels"], device, "model to serve")
    if ck.get("dataset") not in (None, args.dataset):
        raise UserError(f"{args.checkpoint} was trained on {ck['dataset']}; pass --dataset {ck['dataset']}")
    try:
        srv = make_server(model, args.dataset, args.host, args.port, args.label_only, args.fail_after, device,
                          verbose=args.verbose)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror}); choose another --port") from None
    host, port = srv.server_address[:2]
    print(f"serving {args.checkpoint} ({'labels' if args.label_only else 'probabilities'}) on http://{host}:{port}/",
          flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        srv.server_close()


if __name__ == "__main__":
    cli.run(main, get_parser())
