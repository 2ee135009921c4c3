"""The API path against a hostile server (issue 32): every case gets one line on stderr and exit 2, or
the right answers. Fast: a tiny linear model, 12-24 queries, servers on 127.0.0.1 (port 0) in threads;
each test is bounded by SIGALRM, and the clients by their own --api-deadline.

The client is driven through api.ask_endpoint with the real flags (api.add_arguments) under
ownership.cli.run, as ownership_verification.py drives it after building the verifier.
"""
import base64
import gzip
import hashlib
import http.server
import json
import os
import resource
import signal
import socket
import threading
import time

import numpy as np
import pytest
import torch

import serve
from ownership import answer_cache, answers, api, blackbox, cli, endpoint
from ownership.errors import UserError

N_CLASSES = 10


@pytest.fixture(autouse=True)
def bounded():
    """No test of this file may run past 60 s (a hung socket fails the test instead of the suite)."""
    def fail(*_):
        raise TimeoutError("test ran past 60 s")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, N_CLASSES)).eval()


def queries(n=12, seed=0):
    q = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    table = [dict(id=f"{i:05d}-x", sha256=hashlib.sha256(q[i].numpy().tobytes()).hexdigest()) for i in range(n)]
    return q, table, hashlib.sha256(q.numpy().tobytes()).hexdigest()


def parser():
    p = cli.Parser()
    api.add_arguments(p)
    return cli.add_common(p)


def ask(tmp_path, capsys, url, *flags, q=None):
    """(exit code, error lines, other stderr lines, result) of asking `url` as the CLI does."""
    q, table, digest = q or queries()
    out = {}

    def main(args):
        api.check_args(args)
        out["r"] = api.ask_endpoint(args, q, table, digest, N_CLASSES)

    argv = ["--endpoint", url, "--prob-dir", str(tmp_path / "prob"), "--max-qps", "0", "--api-backoff", "0",
            "--api-retries", "0", "--api-deadline", "10", "--api-timeout", "5", *flags]
    code = 0
    try:
        cli.run(main, parser(), argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "API " not in ln[:4]]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) <= 1 and (not errors or lines[-1] == errors[0]), lines[-3:]
    return code, errors, [ln for ln in lines if not ln.startswith("error:")], out.get("r")


# ----------------------------------------------------------------------------- hostile server

class Running:
    """A test server (self.srv) that serves in a daemon thread inside a with-block, and shuts down after it."""

    def __enter__(self):
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()

class Hostile(Running):
    """A server whose every POST is answered by `behave(handler, body)`; `hits` counts requests."""

    def __init__(self, behave):
        hostile = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                hostile.hits += 1
                hostile.headers.append(dict(self.headers))
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                try:
                    behave(self, body)
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.hits, self.headers = 0, []
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/predict"



def send(h, code=200, body=b"", headers=()):
    h.send_response(code)
    for k, v in headers:
        h.send_header(k, v)
    if not any(k == "Content-Length" for k, _ in headers):
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def honest(model):
    """Answers like serve.py would: softmax of `model` on the PNGs."""
    def behave(h, body):
        imgs = [endpoint.decode_png(base64.b64decode(s), 1, 28) for s in json.loads(body)["images"]]
        p = blackbox.model_probs(model, torch.stack(imgs), "fmnist", "cpu")
        send(h, 200, json.dumps({"probs": p.tolist()}).encode())
    return behave


def n_images(body):
    return len(json.loads(body)["images"])


def test_slow_drip_is_cut_at_the_deadline(tmp_path, capsys):
    def drip(h, body):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):  # a byte every 0.2 s: each within --api-timeout, 200 s in all
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.2)
    with Hostile(drip) as s:
        t = time.monotonic()
        code, err, _, _ = ask(tmp_path, capsys, s.url, "--api-deadline", "1.5", "--api-timeout", "1")
        took = time.monotonic() - t
    assert code == 2 and "no complete answer within --api-deadline 1.5 s" in err[0], err
    assert took < 5, took


def test_deadline_with_a_fake_clock():
    """The clock is read between chunks: a request whose answer arrives after the deadline by the
    client's clock is refused, however fast the bytes come."""
    now = [0.0]

    def clock():
        now[0] += 6.0  # every look at the clock: 6 s later (start, one chunk, end: 12 s > 10 s)
        return now[0]
    q, table, _ = queries(4)
    with Hostile(lambda h, b: send(h, 200, json.dumps({"probs": [[0.1] * 10] * 4}).encode())) as s:
        c = endpoint.Client(s.url, endpoint.Move(), deadline=10, retries=1, max_qps=0, clock=clock, sleep=lambda x: None)
        with pytest.raises(UserError) as e:
            c.post(q, "4 queries", 4, N_CLASSES, 0, False)
        assert s.hits == 2
    assert "after 2 tries (no complete answer within --api-deadline 10 s)" in str(e.value)
    c.clock = lambda: 0.0  # a clock that stands still: the same answer is accepted
    with Hostile(lambda h, b: send(h, 200, json.dumps({"probs": [[0.1] * 10] * 4}).encode())) as s:
        c.url = c.shown = s.url
        kind, (v, g) = c.post(q, "4 queries", 4, N_CLASSES, 0, False)
    assert kind == "probs" and g.all() and np.allclose(v, 0.1)


@pytest.mark.parametrize("length", [True, False])
def test_huge_body_is_refused(tmp_path, capsys, length):
    big = b"[" + b"0.1," * (2 << 20)  # 8 MiB

    def huge(h, body):
        if length:
            return send(h, 200, big)
        h.send_response(200)
        h.end_headers()  # no Content-Length: the body runs until the connection closes
        h.wfile.write(big)
    with Hostile(huge) as s:
        code, err, _, _ = ask(tmp_path, capsys, s.url, "--api-max-bytes", str(1 << 20))
    assert code == 2 and ("more than --api-max-bytes 1048576" in err[0] if length else
                          "exceeds --api-max-bytes 1048576 (decoded)" in err[0]), err


def test_gzip_bomb_is_refused_without_inflating(tmp_path, capsys):
    bomb = gzip.compress(b" " * (200 << 20), 9)  # 200 MiB of spaces in about 200 kB
    assert len(bomb) < 400 << 10
    with Hostile(lambda h, b: send(h, 200, bomb, [("Content-Encoding", "gzip")])) as s:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        code, err, _, _ = ask(tmp_path, capsys, s.url, "--api-max-bytes", str(1 << 20))
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # MiB (Linux: kB)
    assert code == 2 and "exceeds --api-max-bytes 1048576 (decoded)" in err[0], err
    assert grew < 100, f"client memory grew by {grew:.0f} MiB"


@pytest.mark.parametrize("code_", [302, 307, "loop"])
def test_redirect_is_an_error_naming_its_target(tmp_path, capsys, code_):
    with Hostile(honest(tiny_model())) as target:
        where = target.url if code_ != "loop" else None

        def redirect(h, body):
            send(h, 302 if code_ == "loop" else code_, b"", [("Location", where or h.path)])
        with Hostile(redirect) as s:
            code, err, _, _ = ask(tmp_path, capsys, s.url)
        assert target.hits == 0  # nothing was re-sent elsewhere
    assert code == 2 and f"(HTTP {302 if code_ == 'loop' else code_}) to {where or '/predict'}" in err[0], err
    assert "redirects are not followed" in err[0]
    assert not os.path.exists(tmp_path / "prob" / "fmnist" / "api-cache-endpoint.jsonl")  # nothing cached


ROWS = 6  # the malformed answer is the second batch's: 6 queries

MALFORMED = {  # answer body -> phrase of the one line
    "probs-5": (b'{"probs": 5}', "not a list of rows"),
    "null": (b"null", "a JSON NoneType, not an object"),
    "labels-5": (b'{"labels": 5}', "rerun with --label-only"),
    "nested": (json.dumps({"probs": [[[0.1] * 10]] * ROWS}).encode(), "not a [class, probability] pair"),
    "huge-int": (("{\"probs\": [[1" + "0" * 400 + ", 0, 0, 0, 0, 0, 0, 0, 0, 0]"
                  + ", [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]" * (ROWS - 1) + "]}").encode(), "beyond float range"),
    "huge-digits": (b'{"probs": [[1' + b"0" * 5000 + b"]]}", "is not JSON"),
    "deep": (b"[" * 100000 + b"]" * 100000, "is not JSON"),
    "nan": (json.dumps({"probs": [[float("nan")] * 10] * ROWS}).encode(), "NaN or Inf"),
    "rows": (json.dumps({"probs": [[0.1] * 10] * (ROWS - 1)}).encode(), "5 answers for 6 queries"),
    "strings": (json.dumps({"probs": [["0.1"] * 10] * ROWS}).encode(), "str '0.1'"),
    "logits": (json.dumps({"probs": [[-1.0, 2.0] + [0.0] * 8] * ROWS}).encode(), "look like logits: apply softmax"),
    "scores": (json.dumps({"probs": [[0.5] * 10] * ROWS}).encode(), "do not sum to 1"),
    "html": (b"<html>maintenance</html>", "is not JSON"),
    "no-key": (b'{"predictions": []}', "no \"probs\", \"top\" or \"labels\""),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_answer_is_one_line_and_never_cached(tmp_path, capsys, case):
    body, phrase = MALFORMED[case]
    calls = []

    def first_good_then_bad(h, b):  # the first batch is fine, the second malformed
        calls.append(1)
        if len(calls) == 1:
            return send(h, 200, json.dumps({"probs": [[0.1] * 10] * n_images(b)}).encode())
        send(h, 200, body)
    with Hostile(first_good_then_bad) as s:
        code, err, _, _ = ask(tmp_path, capsys, s.url, "--api-batch", str(ROWS), q=queries(4 * ROWS))
    assert code == 2 and phrase in err[0], err
    assert f"{ROWS} of {4 * ROWS} answers are kept" in err[0]
    cache = tmp_path / "prob" / "fmnist" / "api-cache-endpoint.jsonl"
    assert len(cache.read_text().splitlines()) == ROWS  # the good batch only


def test_connection_cut_mid_body(tmp_path, capsys):
    def cut(h, body):
        h.send_response(200)
        h.send_header("Content-Length", "5000")
        h.end_headers()
        h.wfile.write(b'{"probs": [[0.1, ')
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
    with Hostile(cut) as s:
        code, err, _, _ = ask(tmp_path, capsys, s.url, "--api-retries", "1")
        assert s.hits == 2  # retried once
    assert code == 2 and "no answer to queries 00000-x..00011-x after 2 tries" in err[0], err


@pytest.mark.parametrize("url,phrase", [("127.0.0.1:8000/predict", "not an http:// or https:// URL"),
                                         ("ftp://127.0.0.1/", "not an http:// or https:// URL"),
                                         ("http://127.0.0.1:99999999/", "is not a URL")])
def test_bad_urls(tmp_path, capsys, url, phrase):
    code, err, _, _ = ask(tmp_path, capsys, url)
    assert code == 2 and phrase in err[0], err


def test_credentials_are_redacted_and_read_from_env_or_netrc(tmp_path, capsys, monkeypatch):
    model = tiny_model()
    with Hostile(honest(model)) as s:
        secret_url = s.url.replace("http://", "http://alice:hunter2@") + "?api_key=hunter3"
        code, err, notes, r = ask(tmp_path, capsys, secret_url)
        assert code == 0 and r is not None
        assert base64.b64decode(s.headers[0]["Authorization"].split()[1]) == b"alice:hunter2"  # requests used them
        cache = (tmp_path / "prob" / "fmnist" / "api-cache-endpoint.jsonl").read_text()
        shown = json.dumps(r[2]) + cache + "\n".join(notes)
        assert "hunter2" not in shown and "hunter3" not in shown and "***@" in r[2]["endpoint"]
        assert any("redacted in every output" in n for n in notes)
        monkeypatch.setenv("SUSPECT_AUTH", "bob:pw-from-env")
        ask(tmp_path, capsys, s.url, "--api-auth-env", "SUSPECT_AUTH", "--refresh")
        assert base64.b64decode(s.headers[-1]["Authorization"].split()[1]) == b"bob:pw-from-env"
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login carol password pw-from-netrc\n")
        monkeypatch.setenv("NETRC", str(netrc))
        ask(tmp_path, capsys, s.url, "--refresh")
        assert base64.b64decode(s.headers[-1]["Authorization"].split()[1]) == b"carol:pw-from-netrc"
    code, err, _, _ = ask(tmp_path, capsys, "http://127.0.0.1:9/", "--api-auth-env", "NO_SUCH_VARIABLE_X")
    assert code == 2 and "NO_SUCH_VARIABLE_X is not set" in err[0]


# ----------------------------------------------------------------------------- cache
def test_another_model_at_the_same_url_is_caught(tmp_path, capsys):
    """The issue's false accusation: model A answered, then model B is served at the same URL. The
    rerun re-asks a sample of the cached queries, sees other answers, and refuses the cache."""
    behave = {"fn": honest(tiny_model(0))}
    with Hostile(lambda h, b: behave["fn"](h, b)) as s:
        code, _, _, first = ask(tmp_path, capsys, s.url, "--api-batch", "4")
        assert code == 0 and s.hits == 3
        code, _, notes, again = ask(tmp_path, capsys, s.url, "--api-batch", "4", "--api-recheck", "5")
        assert code == 0 and s.hits == 4  # one re-ask of 5 cached queries, nothing else
        assert any("reusing 12 cached answers" in n and "5 asked again at random gave the same answers" in n
                   for n in notes), notes
        np.testing.assert_array_equal(first[0], again[0])
        behave["fn"] = honest(tiny_model(1))  # redeployed: another model behind the same URL
        code, err, _, _ = ask(tmp_path, capsys, s.url, "--api-batch", "4")
        assert code == 2 and "the model behind the URL has changed" in err[0] and "--suspect-name" in err[0], err
        code, _, _, other = ask(tmp_path, capsys, s.url, "--api-batch", "4", "--suspect-name", "model-b")
        assert code == 0 and not np.allclose(other[0], first[0], atol=1e-3)
        code, _, _, refreshed = ask(tmp_path, capsys, s.url, "--api-batch", "4", "--refresh")
        np.testing.assert_allclose(refreshed[0], other[0], atol=1e-6)  # --refresh: all asked again
    assert os.path.exists(tmp_path / "prob" / "fmnist" / "api-cache-model-b.jsonl")


def test_cache_key_separates_label_only_and_endpoints(tmp_path, capsys):
    with Hostile(honest(tiny_model())) as s:
        ask(tmp_path, capsys, s.url, "--api-cache", str(tmp_path / "c.jsonl"))
        hits = s.hits
        code, _, _, r = ask(tmp_path, capsys, s.url, "--api-cache", str(tmp_path / "c.jsonl"), "--label-only")
        assert code == 0 and s.hits == hits + 1 and r[2]["reused"] == 0  # label-only is another key
        assert set(np.unique(r[0])) == {0.0, 1.0}
    keys = {json.loads(ln)["key"] for ln in (tmp_path / "c.jsonl").read_text().splitlines()}
    assert len(keys) == 2


def test_torn_and_tampered_cache_lines_are_skipped_with_a_warning(tmp_path, capsys):
    with Hostile(honest(tiny_model())) as s:
        ask(tmp_path, capsys, s.url)
        path = tmp_path / "prob" / "fmnist" / "api-cache-endpoint.jsonl"
        lines = path.read_text().splitlines()
        bad = json.loads(lines[1])
        bad["probs"] = [-1.0] + bad["probs"][1:]
        path.write_text("\n".join([lines[0], json.dumps(bad)] + lines[2:-1] + [lines[-1][:20]]))
        hits = s.hits
        code, _, notes, r = ask(tmp_path, capsys, s.url, "--api-recheck", "0")
        assert code == 0 and s.hits == hits + 1 and r[2]["reused"] == 10  # the two skipped ones asked again
    assert any("skipped 1 lines that are not complete JSON" in n for n in notes), notes
    assert any("skipped 1 cached answers of this suspect that fail the checks" in n for n in notes), notes
    assert len(path.read_text().splitlines()) == 12


def test_suspect_name_must_be_a_plain_name(tmp_path, capsys):
    code, err, _, _ = ask(tmp_path, capsys, "http://127.0.0.1:9/", "--suspect-name", "../$(touch x)")
    assert code == 2 and "--suspect-name" in err[0] and "it names files" in err[0]


# ----------------------------------------------------------------------------- rounded and top-k answers
def test_rounded_and_top_k_answers_are_accepted_like_with_like():
    p = torch.softmax(torch.randn(200, N_CLASSES, generator=torch.Generator().manual_seed(0)) * 3, 1).double().numpy()
    for d in (4, 2, 1):
        served = np.round(p, d)
        v, g = answers.validate(served.tolist(), "s", 200, N_CLASSES)
        raw, form = answers.normalise(v, g, "s")
        assert form == dict(decimals=d, top_k=None)
        reduce = answers.reducer(form)
        np.testing.assert_allclose(reduce(raw), reduce(p), atol=1e-6)  # the suspect = its full answers reduced
        np.testing.assert_allclose(reduce(raw).sum(1), 1, atol=1e-6)
    for k in (1, 3):
        top = np.argsort(-p, 1)[:, :k]
        served = [[[int(c), float(round(row[c], 4))] for c in cs] for row, cs in zip(p, top)]
        v, g = answers.validate(served, "s", 200, N_CLASSES)
        raw, form = answers.normalise(v, g, "s")
        assert form == dict(decimals=4, top_k=k)
        reduce = answers.reducer(form)
        np.testing.assert_allclose(reduce(raw), reduce(p), atol=1e-6)
        assert (reduce(p) > 0).sum(1).max() == k
    assert "rounded to 2 decimals and top-3 (of 10 classes)" in answers.describe(dict(decimals=2, top_k=3), 10)
    full = p.astype(np.float32)
    raw, form = answers.normalise(*answers.validate(full, "s", 200, N_CLASSES), "s")
    assert form == dict(decimals=None, top_k=None) and answers.reducer(form) is None


@pytest.mark.parametrize("rows,phrase", [
    ([[-0.5, 1.5] + [0] * 8], "look like logits: apply softmax"),
    ([[0.3] * 10], "do not sum to 1"),                         # scores: 3.0
    ([[0.09] * 10], "do not sum to 1"),                        # 0.9 at 2 decimals: more than rounding explains
    ([[[0, 0.9], [1, 0.3]]], "do not sum to 1"),               # a top-2 answer summing over 1
    ([[[0, 0.5], [0, 0.2]]], "class 0 is given twice"),
    ([[[12, 0.5]]], "not a class index 0..9"),
    ([[[0, 0.0]]], "gives probability 0 to every class"),
    ([[True] + [0] * 9], "bool"),
])
def test_logits_and_broken_forms_keep_their_refusal(rows, phrase):
    with pytest.raises(UserError) as e:
        answers.validate(rows, "s", 1, N_CLASSES)
    assert phrase in str(e.value), str(e.value)


def test_rounded_sums_within_rounding_are_accepted():
    row = [0.1] * 9 + [0.0]  # 0.9 at 1 decimal: 10 values off by up to 0.05 each
    v, g = answers.validate([row], "s", 1, N_CLASSES)
    raw, form = answers.normalise(v, g, "s")
    assert form["decimals"] == 1


# ----------------------------------------------------------------------------- predictions files
def test_npy_header_claiming_a_trillion_values_is_refused(tmp_path):
    path = tmp_path / "a.npy"
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (1000000, 1000000)})
    assert header
    q, table, _ = queries()
    with pytest.raises(UserError) as e:
        answers.load(str(path), table, N_CLASSES)
    assert "shape (1000000, 1000000), expected (12, 10)" in str(e.value)
    np.save(path, np.ones((12, 10), np.complex64) / 10)
    with pytest.raises(UserError) as e:
        answers.load(str(path), table, N_CLASSES)
    assert "complex" in str(e.value)
    np.save(path, np.ones((12, 10)) / 10)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 8)
    with pytest.raises(UserError) as e:
        answers.load(str(path), table, N_CLASSES)
    assert "is truncated" in str(e.value)


def test_csv_field_over_the_limit_is_refused(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("0." + "1" * (200 << 10) + "," + ",".join(["0.1"] * 9) + "\n")
    q, table, _ = queries(1)
    with pytest.raises(UserError) as e:
        answers.load(str(path), table, N_CLASSES)
    assert "field larger than field limit" in str(e.value) and "cannot read predictions" in str(e.value)


def test_predictions_file_with_top_k_and_labels(tmp_path):
    q, table, _ = queries(3)
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"id": r["id"], "top": [[2, 0.6], [5, 0.3]]}) + "\n" for r in table))
    kind, (v, g) = answers.load(str(path), table, N_CLASSES)
    assert kind == "probs" and g.sum(1).tolist() == [2, 2, 2]
    path.write_text("".join(json.dumps({"id": r["id"], "label": 4}) + "\n" for r in table))
    with pytest.raises(UserError, match="--label-only"):
        answers.load(str(path), table, N_CLASSES)
    kind, labels = answers.load(str(path), table, N_CLASSES, label_only=True)
    assert kind == "labels" and labels.tolist() == [4, 4, 4]


# ----------------------------------------------------------------------------- serve.py
class Served(Running):
    def __init__(self, model=None, **kw):
        self.srv = serve.make_server(model or tiny_model(), "fmnist", port=0, **kw)
        self.port = self.srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"



def raw_request(port, data, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def post(port, body, path="/", headers=""):
    return raw_request(port, f"POST {path} HTTP/1.0\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body)


def test_half_open_connections_do_not_exhaust_serve(tmp_path, capsys):
    threads = threading.active_count()
    with Served(workers=2, backlog=2, conn_timeout=0.5) as s:
        half = []
        for k in range(100):  # 100 clients that send half a request and wait
            c = socket.create_connection(("127.0.0.1", s.port))
            c.sendall(b"POST / HTTP/1.0\r\nContent-Length: 100000\r\n\r\n{\"images\": [" if k % 2 else b"POS")
            half.append(c)
        time.sleep(0.2)
        assert threading.active_count() <= threads + 2 + 4  # the pool, the accept loop, the timers
        t = time.monotonic()
        code, err, _, r = ask(tmp_path, capsys, s.url, "--api-retries", "20", "--api-backoff", "0.1")
        assert code == 0 and r[0].shape == (12, N_CLASSES), err
        assert time.monotonic() - t < 10
        for c in half:
            c.close()


def test_serve_answers_malformed_requests_with_4xx():
    with Served(max_batch=4) as s:
        assert b" 400 " in post(s.port, b"not json").split(b"\r\n")[0]
        assert b" 400 " in post(s.port, b'{"images": ["!!"]}').split(b"\r\n")[0]
        assert b" 400 " in post(s.port, b'{"images": 5}').split(b"\r\n")[0]
        assert b" 411 " in raw_request(s.port, b"POST / HTTP/1.0\r\n\r\n").split(b"\r\n")[0]
        too_big = b"x" * (serve.body_limit("fmnist", 4, False) + 1)
        assert b" 413 " in post(s.port, too_big).split(b"\r\n")[0]
        five = json.dumps({"images": [base64.b64encode(endpoint.png_bytes(x)).decode() for x in queries(5)[0]]})
        assert b"at most --max-batch 4" in post(s.port, five.encode())
        assert b" 404 " in post(s.port, b"{}", "/v2/models/other/infer").split(b"\r\n")[0]
        assert b" 400 " in post(s.port, b'{"inputs": [{"datatype": "FP32"}]}', "/v2/models/suspect/infer").split(b"\r\n")[0]
        t = time.monotonic()  # a body shorter than declared: dropped after --conn-timeout, the server lives on
        assert raw_request(s.port, b"POST / HTTP/1.0\r\nContent-Length: 500\r\n\r\n{", timeout=15) == b""
        assert time.monotonic() - t < 12
        assert b" 200 " in raw_request(s.port, b"GET /v2/health/ready HTTP/1.0\r\n\r\n").split(b"\r\n")[0]


@pytest.mark.parametrize("served,form", [(dict(decimals=2), dict(decimals=2, top_k=None)),
                                         (dict(top_k=3), dict(decimals=None, top_k=3)),
                                         (dict(decimals=1, top_k=1), dict(decimals=1, top_k=1))])
@pytest.mark.parametrize("protocol", ["move", "oip"])
def test_serve_rounded_and_top_k_through_both_protocols(tmp_path, capsys, served, form, protocol):
    model = tiny_model()
    q, table, digest = queries()
    full = blackbox.model_probs(model, q, "fmnist", "cpu").double().numpy()
    flags = ["--api-protocol", "oip", "--model-name", "suspect"] if protocol == "oip" else []
    with Served(model, **served) as s:
        code, err, _, r = ask(tmp_path, capsys, s.url, *flags)
    assert code == 0, err
    raw, got = r[0], r[1]
    if protocol == "oip" and form["decimals"] is not None:
        assert got["decimals"] == form["decimals"]  # FP32 tensors carry the rounded values within GRID_TOL
    assert got == form, got
    reduce = answers.reducer(got)
    np.testing.assert_allclose(reduce(raw), reduce(full), atol=1e-6)


@pytest.mark.parametrize("label_only", [False, True])
def test_oip_matches_our_schema(tmp_path, capsys, label_only):
    model = tiny_model()
    flags = ["--label-only"] if label_only else []
    with Served(model, label_only=label_only) as s:
        _, _, _, ours = ask(tmp_path / "a", capsys, s.url, *flags)
        code, err, _, oip = ask(tmp_path / "b", capsys, s.url.rstrip("/"), "--api-protocol", "oip", "--model-name",
                                "suspect", *flags)
        assert code == 0, err
        code, err, _, _ = ask(tmp_path / "c", capsys, s.url, "--api-protocol", "oip", "--model-name", "nope")
        assert code == 2 and "HTTP 404" in err[0], err
        code, err, _, _ = ask(tmp_path / "d", capsys, s.url, "--api-protocol", "oip")
        assert code == 2 and "needs --model-name" in err[0], err
    np.testing.assert_allclose(oip[0], ours[0], atol=1e-6)  # FP32 tensors vs JSON floats of the same softmax
    assert oip[2]["api_protocol"] == "oip" and oip[2]["cache_key"]["model"] == "suspect"


def test_oip_malformed_tensors(tmp_path, capsys):
    outs = {"shape": (b'{"outputs": [{"name": "p", "datatype": "FP32", "shape": [12, 9], "data": []}]}', "holds 0 values"),
            "count": (json.dumps({"outputs": [{"name": "p", "datatype": "FP32", "shape": [12, 10], "data": [0.1] * 119}]}).encode(),
                      "holds 119 values"),
            "dtype": (json.dumps({"outputs": [{"name": "p", "datatype": "BYTES", "shape": [12], "data": ["a"] * 12}]}).encode(),
                      "datatype 'BYTES'"),
            "none": (b'{"error": "boom"}', "no \"outputs\" list")}
    for body, phrase in outs.values():
        with Hostile(lambda h, b, body=body: send(h, 200, body)) as s:
            code, err, _, _ = ask(tmp_path, capsys, s.url, "--api-protocol", "oip", "--model-name", "m")
        assert code == 2 and phrase in err[0], err
    assert answer_cache.RECHECK > 0
