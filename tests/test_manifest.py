"""ownership.manifest.Stages (reproduce.py's stages): a stage is skipped only when its record (settings, input checksums)
matches and its outputs exist with the recorded checksums; a changed output reruns its stage, and a
changed input reruns the stages that consume it. Toy stages that copy text, no training."""
import argparse
import json
import os

import pytest

from ownership import manifest as reproduce
from ownership.manifest import Task


class Stage:
    """A stage module: writes --text and the contents of its --src files to --out (a file, or with
    --folder two files in a folder). Like embed_features.py, a folder stage skips an existing folder
    by itself."""

    def __init__(self, name):
        self.__name__, self.calls = name, 0

    def get_parser(self):
        p = argparse.ArgumentParser()
        p.add_argument("--out")
        p.add_argument("--text", default="")
        p.add_argument("--src", nargs="*", default=[])
        p.add_argument("--folder", action="store_true")
        return p

    def main(self, args):
        if args.folder and os.path.isdir(args.out):
            return
        self.calls += 1
        text = args.text + "".join(open(s).read() for s in args.src)
        if args.folder:
            os.makedirs(args.out)
            for name in ("a.txt", "b.txt"):
                with open(os.path.join(args.out, name), "w") as f:
                    f.write(name + text)
        else:
            with open(args.out, "w") as f:
                f.write(text)


def test_stages_rerun_what_changed(tmp_path, capsys):
    a, b, c = (str(tmp_path / n) for n in ("a.txt", "b.txt", "c"))
    A, B, C = Stage("A"), Stage("B"), Stage("C")
    manifest = str(tmp_path / "manifest.json")

    def pipeline(text="x", seed=0):
        st = reproduce.Stages(manifest)
        job = lambda *a, inputs=(): Task(*a, inputs, dict(argv=a[3], seed=seed))  # noqa: E731
        st.run(job("a", a, A, ["--out", a, "--text", text]))
        st.run(job("b", b, B, ["--out", b, "--src", a], inputs=[a]))
        st.run(job("c", c, C, ["--out", c, "--folder", "--text", "z"]))
        return A.calls, B.calls, C.calls

    assert pipeline() == (1, 1, 1)
    assert pipeline() == (1, 1, 1)                      # all skipped
    record = json.load(open(manifest))[b]
    assert record["settings"] == {"argv": ["--out", b, "--src", a], "seed": 0}
    assert record["inputs"] == {a: reproduce.checksum(a)} and record["outputs"] == {b: reproduce.checksum(b)}
    assert 0 <= record["seconds"] < 60  # what the job cost

    open(b, "w").write("corrupt")
    assert pipeline() == (1, 2, 1)                      # b redone, nothing else
    open(a, "w").write("corrupt")
    assert pipeline() == (2, 2, 1)                      # a redone with the same bytes: b's input unchanged
    assert pipeline(text="y") == (3, 3, 1)              # a changed: b, which reads it, reruns too
    os.remove(b)
    assert pipeline(text="y") == (3, 4, 1)              # a missing output
    assert pipeline(text="y", seed=1) == (4, 5, 1)      # another seed: every stage (c's own check keeps c)
    with open(os.path.join(c, "b.txt"), "a") as f:
        f.write("!")
    assert pipeline(text="y", seed=1) == (4, 5, 2)      # a file of a folder output changed: removed and redone
    assert open(os.path.join(c, "b.txt")).read() == "b.txtz"

    old = {k: "0123456789abcdef" for k in json.load(open(manifest))}  # the earliest manifest format
    json.dump(old, open(manifest, "w"))
    assert pipeline(text="y", seed=1) == (5, 6, 2)      # redone (c's own check keeps the folder)
    old = {k: dict(v, preset="0123456789abcdef", argv=v["settings"]["argv"], seed=1)  # one preset hash per job
           for k, v in json.load(open(manifest)).items()}
    for v in old.values():
        del v["settings"]
    json.dump(old, open(manifest, "w"))
    capsys.readouterr()
    assert pipeline(text="y", seed=1) == (6, 7, 2)      # redone once, said in one line
    assert capsys.readouterr().out.count("written by an older reproduce.py") == 1
    assert pipeline(text="y", seed=1) == (6, 7, 2)


def test_checksum_of_a_folder(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x.png").write_bytes(b"1")
    (d / "index.json").write_text("{}")
    first = reproduce.checksum(str(d))
    (d / ".tmp-partial").write_bytes(b"ignored")        # temporary files of an atomic write
    assert reproduce.checksum(str(d)) == first
    (d / "sub" / "x.png").write_bytes(b"2")
    assert reproduce.checksum(str(d)) != first
    (d / "sub" / "x.png").write_bytes(b"1")
    (d / "sub" / "x.png").rename(d / "sub" / "y.png")   # same bytes, another name
    assert reproduce.checksum(str(d)) != first


def test_run_all_runs_jobs_in_worker_processes(tmp_path):
    """Independent jobs in two single-thread worker processes: every output made, each job recorded,
    and a rerun runs nothing."""
    import toy_stage
    manifest = str(tmp_path / "manifest.json")
    outs = [str(tmp_path / f"{k}.txt") for k in range(4)]
    jobs = [Task("toy", o, toy_stage, ["--out", o, "--text", f"job{k}"], []) for k, o in enumerate(outs)]
    st = reproduce.Stages(manifest)
    assert st.run_all(jobs, workers=2, threads=1) == 4
    for k, o in enumerate(outs):
        text, pid, threads = open(o).read().split()
        assert text == f"job{k}" and int(pid) != os.getpid() and threads == "1"
    done = json.load(open(manifest))
    assert all(done[o]["outputs"] == {o: reproduce.checksum(o)} for o in outs) and "toy" in st.timings
    assert st.timings["toy"] == pytest.approx(sum(done[o]["seconds"] for o in outs), abs=0.2)  # the stage: its jobs'
    again = reproduce.Stages(manifest)
    assert again.run_all(jobs, workers=2, threads=1) == 0


def test_run_all_waits_for_the_jobs_a_job_reads(tmp_path):
    """A job whose inputs are another listed job's outputs starts after it and reads what it wrote,
    in worker processes and in this one; when an upstream job is redone, the job reading it is decided
    on its new output; a job listed before the job it reads from is refused."""
    import toy_stage
    a, b, c, d = (str(tmp_path / f"{n}.txt") for n in "abcd")
    jobs = [Task("one", a, toy_stage, ["--out", a, "--text", "A"], []),
            Task("one", b, toy_stage, ["--out", b, "--text", "B"], []),
            Task("two", c, toy_stage, ["--out", c, "--text", "C", "--src", a, b], [a, b]),
            Task("three", d, toy_stage, ["--out", d, "--text", "D", "--src", c], [c])]
    for workers in (2, 1):
        manifest = str(tmp_path / f"manifest{workers}.json")
        st = reproduce.Stages(manifest)
        assert st.run_all(jobs, workers=workers, threads=1) == 4
        assert open(d).read().split()[0] == "D+C+A+B"
        assert set(st.timings) == {"one", "two", "three"}
        # a redone: in a new worker its pid, so its bytes, differ and c and d are redone; in this process
        # it comes out the same, so c and d are not
        os.remove(a)
        assert reproduce.Stages(manifest).run_all(
            jobs, workers=workers, threads=1) == (3 if workers > 1 else 1)
    try:
        reproduce.Stages(str(tmp_path / "m.json")).run_all(jobs[::-1])
    except ValueError as e:
        assert "listed before" in str(e)
    else:
        raise AssertionError("a job listed before its input's job was accepted")


def test_a_failed_job_ends_the_run_after_the_jobs_beside_it_are_recorded(tmp_path):
    import pytest
    import toy_stage
    from ownership.errors import UserError
    ok, bad, later = (str(tmp_path / f"{n}.txt") for n in ("ok", "bad", "later"))
    jobs = [Task("toy", ok, toy_stage, ["--out", ok, "--sleep", "2"], []),
            Task("toy", bad, toy_stage, ["--out", bad, "--fail"], []),
            Task("toy", later, toy_stage, ["--out", later, "--src", bad], [bad])]
    manifest = str(tmp_path / "manifest.json")
    with pytest.raises(UserError, match="toy failure"):
        reproduce.Stages(manifest).run_all(jobs, workers=2, threads=1)
    assert list(json.load(open(manifest))) == [ok] and not os.path.exists(later)  # ok recorded, later never ran
