"""The stage manifest of reproduce.py: which stages are done, so an interrupted run resumes.

A stage is keyed by its first output and recorded with its module, argv, preset hash, seed, and the
sha256 of its inputs and outputs (`checksum`). It is skipped when that record matches and its
outputs still have the recorded checksums.
"""
import hashlib
import importlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from tqdm import tqdm

from . import jsonio
from .presets import stage_settings


def checksum(path):
    """sha256 of a file, or of a folder: every file's relative name and sha256, in sorted order
    (hidden temporary files skipped). Reading is the cost: about 1 GB/s here (docs/BENCHMARKS.md)."""
    h = hashlib.sha256()
    if not os.path.isdir(path):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            file = os.path.join(root, name)
            h.update(f"{os.path.relpath(file, path)}\0{checksum(file)}\n".encode())
    return h.hexdigest()


class Stages:
    """Runs stage functions and records each finished one in manifest.json, keyed by its first output:
    the module, argv, preset hash and seed, the checksums of its input files and of its outputs. A stage
    is skipped when that record matches and its outputs exist with the recorded checksums; an output
    changed since (corrupted, replaced) is removed and its stage rerun. Since the inputs' checksums are
    part of the record, every later stage that consumes a changed output reruns too. A rerun that gives
    the same bytes changes nothing downstream: on the CPU a gradient set does; a checkpoint does not, as
    it records its training time, so the stages after a retrained model rerun."""

    def __init__(self, manifest_path, preset, seed, force):
        self.path = manifest_path
        self.preset_hash = hashlib.sha256(json.dumps(stage_settings(preset), sort_keys=True,
                                                     default=str).encode()).hexdigest()[:16]
        self.seed = seed
        self.force = force
        self.done = {}
        if os.path.exists(manifest_path) and not force:
            with open(manifest_path) as f:
                self.done = json.load(f)
        self.sums = {}  # path -> checksum, each file read once per run
        self.timings = {}

    def checksum(self, path):
        if path not in self.sums:
            self.sums[path] = checksum(path) if os.path.exists(path) else None
        return self.sums[path]

    def pending(self, stage, outputs, module, argv, inputs=()):
        """The job's record if it must run (an output changed since its stage made it is removed
        first), else None: its record matches the manifest and its outputs the recorded checksums."""
        outputs = [outputs] if isinstance(outputs, str) else outputs
        record = dict(stage=stage, module=module.__name__, argv=argv, preset=self.preset_hash, seed=self.seed,
                      inputs={p: self.checksum(p) for p in inputs})
        old = self.done.get(outputs[0])
        old = old if isinstance(old, dict) else {}  # a manifest of an older version: redo
        made = old.get("outputs", {})
        if (not self.force and {k: old.get(k) for k in record} == record
                and all(self.checksum(o) is not None and self.checksum(o) == made.get(o) for o in outputs)):
            return None
        for o in outputs:  # changed since its stage made it: never let the stage take it as done
            if o in made and self.checksum(o) not in (None, made[o]):
                print(f"{o} changed since {stage} made it (checksum differs); redoing {stage}")
                if os.path.isdir(o):
                    shutil.rmtree(o)
                else:
                    os.remove(o)
                self.sums.pop(o, None)
        return dict(record, outputs=outputs)

    def _finish(self, record):
        """Record a job that ran: its outputs' checksums, written to the manifest at once."""
        outputs = record["outputs"]
        for o in outputs:
            self.sums.pop(o, None)
        self.done[outputs[0]] = dict(record, outputs={o: self.checksum(o) for o in outputs})
        jsonio.write(self.path, self.done)

    def run(self, stage, outputs, module, argv, inputs=()):
        """Run one job of `stage` (module.main on argv) in this process unless it is done. Returns
        whether it ran."""
        return self.run_all([(stage, outputs, module, argv, inputs)]) == 1

    def run_all(self, jobs, workers=1, threads=None):
        """Run the jobs that are not done, [(stage, outputs, module, argv, inputs)], in list order as far
        as their inputs allow: a job whose inputs include another listed job's outputs waits for that
        job, and whether it must run at all is decided then (on the inputs as they came out). The list
        must name a job after the jobs it reads from. With `workers` 1 the jobs run in this process, else
        in `workers` processes of `threads` torch threads each, the first ready job of the list going to
        the first free process (small models leave the threads of one process idle: two single-thread
        processes train about 1.3x (fp32) to 1.6x (bf16) as fast on 2 cores, docs/BENCHMARKS.md), so
        the stages overlap. Each job is recorded as it finishes, so an interrupted run resumes; when a
        job fails, the jobs running beside it are finished and recorded before its error is raised. A
        job always runs under the same thread count, so a redone job gives the same bytes as the first
        run. self.timings[stage] grows by the seconds its jobs ran (with several workers the stages of
        one call add up to about `workers` times its wall clock). Returns the number of jobs run."""
        made_by = {}  # output -> index of the listed job that makes it
        for i, (_, outputs, _, _, _) in enumerate(jobs):
            made_by.update({o: i for o in ([outputs] if isinstance(outputs, str) else outputs)})
        deps = []
        for i, job in enumerate(jobs):
            d = {made_by[p] for p in job[4] if p in made_by}
            if any(k >= i for k in d):
                raise ValueError(f"job {job[1]} is listed before a job whose outputs it reads")
            deps.append(d)
        state, records = {}, {}  # index -> 'todo' | 'wait' | 'running' | 'done'; index -> its record
        for i, (stage, outputs, module, argv, inputs) in enumerate(jobs):
            if any(state[k] != "done" for k in deps[i]):
                state[i] = "wait"  # decided once its inputs exist
                continue
            records[i] = self.pending(stage, outputs, module, argv, inputs)
            state[i] = "done" if records[i] is None else "todo"
        began = {}

        def ready():
            """The first job that can start now (its record made), or None."""
            for i, (stage, outputs, module, argv, inputs) in enumerate(jobs):
                if state[i] not in ("todo", "wait") or any(state[k] != "done" for k in deps[i]):
                    continue
                if state[i] == "wait":
                    records[i] = self.pending(stage, outputs, module, argv, inputs)
                    if records[i] is None:
                        state[i] = "done"
                        return ready()  # a job it held back may be ready now
                return i
            return None

        def started(i):
            state[i], began[i] = "running", time.time()

        def finished(i):
            self._finish(records[i])
            state[i] = "done"
            stage = jobs[i][0]
            self.timings[stage] = round(self.timings.get(stage, 0.0) + time.time() - began[i], 1)

        n = 0
        if workers <= 1:
            while (i := ready()) is not None:
                started(i)
                _run_module(jobs[i][2], jobs[i][3])
                finished(i)
                n += 1
        elif any(v in ("todo", "wait") for v in state.values()):  # several workers: even one job goes to a
            # worker (its thread count, its numbers). They start with `threads` threads and no per-epoch
            # progress bars (the environment is read when they start; the parent shows one bar over the jobs)
            env = dict(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            left = sum(v in ("todo", "wait") for v in state.values())
            try:
                with ProcessPoolExecutor(min(workers, left), multiprocessing.get_context("spawn")) as pool, \
                        tqdm(total=left, desc=f"{' + '.join(dict.fromkeys(j[0] for j in jobs))} ({workers} processes)") as bar:
                    running = {}
                    while True:
                        while len(running) < workers and (i := ready()) is not None:
                            started(i)
                            running[pool.submit(_run_module, jobs[i][2].__name__, jobs[i][3])] = i  # by name
                        if not running:
                            break
                        done, _ = wait(running, return_when=FIRST_COMPLETED)
                        failed = [f for f in done if f.exception() is not None]
                        if failed:  # a job's error ends the run, as it would in one process, once the
                            # jobs beside it have finished and been recorded (a resume skips them)
                            print(f"{jobs[running[failed[0]]][1]} failed; finishing the {len(running) - len(failed)} "
                                  f"job(s) running beside it", file=sys.stderr, flush=True)
                            for f in wait(running).done:
                                if f.exception() is None:
                                    finished(running[f])
                            failed[0].result()
                        for f in done:
                            finished(running.pop(f))
                            n += 1
                        bar.total = n + sum(v in ("todo", "wait", "running") for v in state.values())
                        bar.update(len(done))
                    bar.total = n  # jobs decided only now may have been skipped
                    bar.refresh()
            finally:
                for k, v in saved.items():
                    os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        return n


def _run_module(module, argv):
    """`module`'s main on argv; `module` is the module, or in a worker process its name (a UserError
    reaches the parent as itself)."""
    module = importlib.import_module(module) if isinstance(module, str) else module
    module.main(module.get_parser().parse_args(argv))
