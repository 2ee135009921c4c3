"""Black-box verification through a prediction API (issue 16, docs/API.md): exported queries, answer
files, the HTTP client against a real server (serve.py on 127.0.0.1, port 0), its cache and its errors.

One smoke run (reproduce.py --preset smoke) per session, plus the per-dataset black-box classifier
trained from its models with train_clf.py. MOVE_SMOKE_WORKDIR=<dir> reuses (or fills) a workdir
instead of a fresh temporary one.
"""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import ownership_verification as ov
import serve
import train_clf
from ownership import api, blackbox, paths
from ownership.checkpoints import load_model
from ownership.data import load_styled, normalise

pytestmark = pytest.mark.slow  # one smoke run (the fixture: 146 s, docs/BENCHMARKS.md) and ~2.5 min of tests


@pytest.fixture(scope="session")
def smoke(repo, tmp_path_factory):
    work = os.environ.get("MOVE_SMOKE_WORKDIR") or str(tmp_path_factory.mktemp("api-smoke"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, os.path.join(repo, "reproduce.py"), "--preset", "smoke", "--workdir", work,
                        "--out", work], capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    M = os.path.join(work, "model")
    clf = paths.clf(M, "fmnist", None, "black-box")
    common = ["--dataset", "fmnist", "--data-dir", os.path.join(work, "data"), "--model-dir", M]
    ck = train_clf.main(train_clf.get_parser().parse_args(
        common + ["--access", "black-box", "--mlp_epoch", "20", "--batch_size", "64", "--hidden-cap", "128"]))
    assert clf.endswith("blackbox-fmnist.pt") and os.path.exists(clf)
    for arch in ("wrn16-1", "wrn10-1"):  # victims and benign models of every architecture
        assert any(os.path.basename(s).startswith(f"vict-{arch}") for s in ck["sources"]["pos"])
        assert any(os.path.basename(s).startswith(f"benign-{arch}") for s in ck["sources"]["neg"])
    refs = paths.all_references(M)
    assert len(refs) == 8 and not set(refs) & set(ck["sources"]["neg"])
    return dict(work=work, model=M, clf=clf, refs=refs, common=common,
                stolen=paths.attack(M, "fine-tune", "wrn16-1"), indep=paths.independent(M, 1, "wrn10-1"))


def verify(smoke, tmp_path, *extra):
    args = ov.get_parser().parse_args(smoke["common"] + ["--access", "black-box", "--prob-dir", str(tmp_path / "prob"),
                                                         *extra])
    return ov.main(args)


def weights(smoke, tmp_path, suspect):
    return verify(smoke, tmp_path, "--s", suspect, "--c", smoke["clf"], "--b", *smoke["refs"])


def run_cli(smoke, tmp_path, capsys, *extra):
    """The command line as the user runs it: (exit code, stderr lines)."""
    from ownership import cli
    with pytest.raises(SystemExit) as e:
        cli.run(ov.main, ov.get_parser(), smoke["common"] + ["--access", "black-box", "--prob-dir",
                                                             str(tmp_path / "prob"), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]  # progress bars use \r
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert not errors or lines[-1] == errors[-1], lines[-3:]
    return e.value.code, errors


class Server:
    def __init__(self, checkpoint, handler=serve.Handler, **kw):
        model, _ = load_model(checkpoint)
        self.srv = serve.make_server(model, "fmnist", port=0, handler=handler, **kw)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()


def http(smoke, tmp_path, url, *extra):
    return verify(smoke, tmp_path, "--endpoint", url, "--api-cache", str(tmp_path / "cache.jsonl"), "--max-qps", "0",
                  "--api-batch", "100", *extra)


@pytest.fixture(scope="session")
def expected(smoke, tmp_path_factory):
    """Weights-path results of the stolen and the independent model (per-dataset classifier, all refs)."""
    t = tmp_path_factory.mktemp("weights")
    return {k: weights(smoke, t, smoke[k]) for k in ("stolen", "indep")}


@pytest.mark.parametrize("who", ["stolen", "indep"])
def test_http_matches_weights(smoke, expected, tmp_path, who):
    with Server(smoke[who]) as s:
        r = http(smoke, tmp_path, s.url)
        assert s.srv.requests == 10  # 200 images x 5 queries, 100 per request
    w = expected[who]
    assert r["verdict"] == w["verdict"] and r["references"] == w["references"] == smoke["refs"]
    assert r["p_value"] == pytest.approx(w["p_value"], rel=1e-6, abs=1e-12)
    assert r["delta_mu"] == pytest.approx(w["delta_mu"], abs=1e-6)
    assert r["n_queries"] == 1000 and r["requests"] == 10


def test_stolen_and_independent_differ(expected):
    # not a detection claim on the tiny smoke models (docs/API.md): the two suspects must not be one
    assert expected["stolen"]["p_value"] != expected["indep"]["p_value"]


@pytest.fixture(scope="session")
def exported(smoke, tmp_path_factory):
    """The exported queries and the stolen model's answers, computed from the PNG files alone (in one
    batch of 1000, so the float32 sums differ from the verifier's batches in the last bits: the
    p-values it gives agree to rel 1e-5, 1.8e-6 measured)."""
    t = tmp_path_factory.mktemp("export")
    out = verify(smoke, t, "--export-queries", str(t / "q"), "--c", smoke["clf"])
    with open(out["queries"]) as f:
        meta = json.load(f)
    model, _ = load_model(smoke["stolen"])
    x = torch.stack([torch.from_numpy(np.array(Image.open(t / "q" / r["file"]))).unsqueeze(0) for r in meta["queries"]])
    with torch.no_grad():
        probs = torch.softmax(model(normalise(x, "fmnist")), 1).numpy()
    return t / "q", meta, x, probs


def test_export_is_the_features_queries(smoke, exported):
    folder, meta, x, _ = exported
    assert meta["schema"] == api.SCHEMA and meta["views"] == 4 and meta["seed"] == 0 and meta["dataset"] == "fmnist"
    assert meta["n_queries"] == len(meta["queries"]) == 1000 == len([f for f in os.listdir(folder) if f.endswith(".png")])
    assert [q["view"] for q in meta["queries"][:5]] == ["x", "v0", "v1", "v2", "v3"]
    assert meta["queries"][7] == dict(meta["queries"][7], id="00001-v1", image=1)
    images = load_styled(os.path.join(smoke["work"], "data"), "fmnist", 0.1, "test")
    clean = blackbox.originals(images, "fmnist", os.path.join(smoke["work"], "data"), "test")
    assert torch.equal(x, blackbox.queries(images, clean, "fmnist", 4, 0))  # the PNGs are the exact pixels
    assert torch.equal(x[1::5], images.x) and torch.equal(x[0::5], clean)


@pytest.mark.parametrize("fmt", ["npy", "csv", "jsonl"])
def test_predictions_file_matches_weights(smoke, expected, exported, tmp_path, fmt):
    folder, meta, _, probs = exported
    path = tmp_path / f"answers.{fmt}"
    ids = [q["id"] for q in meta["queries"]]
    if fmt == "npy":
        np.save(path, probs)
    elif fmt == "csv":  # with an id column, rows shuffled
        order = np.random.default_rng(0).permutation(len(ids))
        path.write_text("id," + ",".join(f"p{c}" for c in range(10)) + "\n"
                        + "".join(ids[j] + "," + ",".join(repr(float(v)) for v in probs[j]) + "\n" for j in order))
    else:
        order = np.random.default_rng(1).permutation(len(ids))
        path.write_text("".join(json.dumps({"id": ids[j], "probs": probs[j].tolist()}) + "\n" for j in order))
    r = verify(smoke, tmp_path, "--predictions", str(path), "--queries", str(folder))
    assert r["p_value"] == pytest.approx(expected["stolen"]["p_value"], rel=1e-5, abs=1e-12)
    assert r["verdict"] == expected["stolen"]["verdict"]


def test_label_only(smoke, exported, tmp_path, capsys):
    _, _, _, probs = exported
    np.save(tmp_path / "p.npy", probs)
    from_file = verify(smoke, tmp_path, "--predictions", str(tmp_path / "p.npy"), "--label-only")
    with Server(smoke["stolen"], label_only=True) as s:
        code, err = run_cli(smoke, tmp_path, capsys, "--endpoint", s.url, "--api-cache", str(tmp_path / "c.jsonl"),
                            "--max-qps", "0", "--api-batch", "250")
        assert code == 2 and len(err) == 1 and "--label-only" in err[0]  # labels without the flag
        r = http(smoke, tmp_path, s.url, "--label-only")
    assert r["label_only"] and r["p_value"] == pytest.approx(from_file["p_value"], rel=1e-5, abs=1e-12)
    answers = np.load(tmp_path / "prob" / "fmnist" / "api-endpoint-blackbox-labels.npz")["answers"]
    assert set(np.unique(answers)) == {0.0, 1.0} and (answers.sum(1) == 1).all()


def _bad(probs, ids):
    logits = np.log(probs + 1e-12)
    rows = [json.dumps({"id": i, "probs": p.tolist()}) for i, p in zip(ids, probs)]
    return {  # name: (writer of the file content or array, phrase the one line must hold)
        "rows": (probs[:-1], "999 answers for 1000 queries"),
        "width": (probs[:, :9], "expected (1000, 10)"),
        "nan": (np.where(np.arange(1000)[:, None] == 3, np.nan, probs), "NaN or Inf"),
        "logits": (logits, "apply softmax"),
        "unnormalised": (probs * 3, "apply softmax"),
        "duplicate": ("\n".join(rows + rows[5:6]) + "\n", "answered twice"),
        "missing": ("\n".join(rows[:-2]) + "\n", "2 queries have no answer"),
        "unknown": ("\n".join(rows[:-1] + [json.dumps({"id": "99999-x", "probs": probs[0].tolist()})]) + "\n",
                    "not a query"),
    }


@pytest.mark.parametrize("case", ["rows", "width", "nan", "logits", "unnormalised", "duplicate", "missing", "unknown"])
def test_bad_predictions_file(smoke, exported, tmp_path, capsys, case):
    _, meta, _, probs = exported
    content, phrase = _bad(probs, [q["id"] for q in meta["queries"]])[case]
    path = tmp_path / ("a.jsonl" if isinstance(content, str) else "a.npy")
    path.write_text(content) if isinstance(content, str) else np.save(path, content)
    code, err = run_cli(smoke, tmp_path, capsys, "--predictions", str(path))
    assert code == 2 and len(err) == 1, err
    assert str(path) in err[0] and phrase in err[0], err[0]


class LogitsAfterTwo(serve.Handler):
    """A broken API: from the third request on it answers logits."""

    def answer(self, x):
        out = super().answer(x)
        if self.server.answered >= 2:
            out["probs"] = np.log(np.asarray(out["probs"]) + 1e-12).tolist()
        return out


def test_bad_endpoint_answers_keep_cache(smoke, tmp_path, capsys):
    cache = tmp_path / "cache.jsonl"
    with Server(smoke["stolen"], handler=LogitsAfterTwo) as s:
        code, err = run_cli(smoke, tmp_path, capsys, "--endpoint", s.url, "--api-cache", str(cache), "--max-qps", "0",
                            "--api-batch", "100")
    assert code == 2 and len(err) == 1 and "apply softmax" in err[0] and "200 of 1000 answers are kept" in err[0], err
    assert len(cache.read_text().splitlines()) == 200


def test_resume_after_server_failure(smoke, expected, tmp_path, capsys):
    cache = tmp_path / "cache.jsonl"
    flags = ["--api-cache", str(cache), "--max-qps", "0", "--api-batch", "100", "--api-retries", "2",
             "--api-backoff", "0.01"]
    with Server(smoke["stolen"], fail_after=3) as s:
        code, err = run_cli(smoke, tmp_path, capsys, "--endpoint", s.url, *flags)
        assert code == 2 and len(err) == 1 and "HTTP 503" in err[0] and "300 of 1000 answers are kept" in err[0], err
        assert s.srv.requests == 3 + 3  # three answered, then the failing one tried 1 + 2 times
        s.srv.fail_after, s.srv.requests = None, 0  # the API recovers
        r = verify(smoke, tmp_path, "--endpoint", s.url, *flags)
        assert s.srv.requests == 1 + 7 and r["requests"] == 8  # the re-ask of 8 cached, then the missing 700
        assert len(cache.read_text().splitlines()) == 1000 and r["reused"] == 300
        s.srv.requests = 0
        again = verify(smoke, tmp_path, "--endpoint", s.url, *flags)
        assert s.srv.requests == 1  # all cached: only the re-ask
    for x in (r, again):
        assert x["p_value"] == pytest.approx(expected["stolen"]["p_value"], rel=1e-5, abs=1e-12)


def test_unreachable_endpoint_and_argument_errors(smoke, tmp_path, capsys):
    code, err = run_cli(smoke, tmp_path, capsys, "--endpoint", "http://127.0.0.1:9/", "--api-cache",
                        str(tmp_path / "c.jsonl"), "--api-retries", "1", "--api-backoff", "0", "--api-timeout", "2")
    assert code == 2 and len(err) == 1 and "ConnectionError" in err[0] and "rerunning" in err[0], err
    code, err = run_cli(smoke, tmp_path, capsys, "--endpoint", "http://127.0.0.1:9/", "--s", smoke["stolen"])
    assert code == 2 and len(err) == 1 and "drop them" in err[0]
    code, err = run_cli(smoke, tmp_path, capsys, "--predictions", str(tmp_path / "none.npy"))
    assert code == 2 and len(err) == 1 and "does not exist" in err[0]


def test_evidence_record_and_verify_record(smoke, tmp_path, capsys):
    """The record names every file with its sha256 and recomputes offline; rounded answers (serve.py
    --decimals 2) are reduced like with like, also when recomputed; a changed file is named."""
    with Server(smoke["stolen"], decimals=2) as s:
        r = http(smoke, tmp_path, s.url, "--suspect-name", "acme")
    assert r["answers_form"] == {"decimals": 2, "top_k": None}
    ev = r["evidence"]
    assert len(ev["queries_sha256"]) == 64 and ev["seed"] == 0 and ev["protocol"]["test"] == r["protocol"]["test"]
    assert ev["answers_file"].endswith("api-acme-blackbox.answers.jsonl") and len(ev["answers_sha256"]) == 64
    assert [x["path"] for x in ev["references"]] == [os.path.abspath(p) for p in smoke["refs"]] and ev["clf"]["sha256"]
    record = tmp_path / "prob" / "fmnist" / "api-acme-blackbox.json"
    summary = verify(smoke, tmp_path, "--verify-record", str(record))
    assert summary["matches"] and summary["p_value_recomputed"] == r["p_value"]
    with open(ev["answers_file"], "a") as f:
        f.write("\n")
    code, err = run_cli(smoke, tmp_path, capsys, "--verify-record", str(record))
    assert code == 2 and "answers file" in err[0] and "sha256 differs" in err[0], err


def test_another_model_at_the_same_url_keeps_the_first_result(smoke, tmp_path, capsys):
    """The issue's false accusation and overwritten result: the independent model served where the
    stolen one was is refused by the cache check, and --refresh cannot replace the first result."""
    with Server(smoke["stolen"]) as s:
        first = http(smoke, tmp_path, s.url)
        s.srv.model = load_model(smoke["indep"])[0].eval()
        code, err = run_cli(smoke, tmp_path, capsys, "--endpoint", s.url, "--api-cache", str(tmp_path / "cache.jsonl"),
                            "--max-qps", "0", "--api-batch", "100")
        assert code == 2 and "the model behind the URL has changed" in err[0], err
        code, err = run_cli(smoke, tmp_path, capsys, "--endpoint", s.url, "--api-cache", str(tmp_path / "cache.jsonl"),
                            "--max-qps", "0", "--api-batch", "100", "--refresh")
        assert code == 2 and "other answers of this suspect name and URL" in err[0], err
        other = http(smoke, tmp_path, s.url, "--suspect-name", "indep")
    assert other["p_value"] != first["p_value"]
    assert str(np.load(tmp_path / "prob" / "fmnist" / "api-endpoint-blackbox.npz")["suspect"]) == first["suspect"]
