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
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

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
        record = self.pending(stage, outputs, module, argv, inputs)
        if record is None:
            return False
        self._execute(stage, record, module, argv)
        return True

    def _execute(self, stage, record, module, argv):
        """Run a pending job in this process and record it."""
        start = time.time()
        module.main(module.get_parser().parse_args(argv))
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.time() - start, 1)
        self._finish(record)

    def run_all(self, stage, jobs, workers=1, threads=None):
        """Run the jobs of `stage` that are not done, [(outputs, module, argv, inputs)], none of which
        reads another's outputs: in this process when `workers` is 1, else in `workers` processes of
        `threads` torch threads each (small models leave the threads of one process idle: two
        single-thread processes train about 1.3x (fp32) to 1.6x (bf16) as fast on 2 cores,
        docs/BENCHMARKS.md). Each job is recorded as it finishes, so an interrupted batch resumes. A job
        always runs under the same thread count, so a redone job gives the same bytes as the first run."""
        todo = [(r, m, a) for r, m, a in ((self.pending(stage, o, m, a, i), m, a) for o, m, a, i in jobs) if r]
        if not todo:
            return 0
        if workers <= 1:  # with several workers even one job goes to a worker: its thread count, its numbers
            for record, module, argv in todo:
                self._execute(stage, record, module, argv)
            return len(todo)
        start = time.time()
        # the workers start with `threads` threads and without per-epoch progress bars (the environment
        # is read when they start; the parent shows one bar over the jobs)
        env = dict(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            with ProcessPoolExecutor(min(workers, len(todo)), multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_run_module, m.__name__, a): r for r, m, a in todo}
                for f in tqdm(as_completed(futures), total=len(futures), desc=f"{stage} ({workers} processes)"):
                    f.result()  # a job's error ends the run here, as it would in one process
                    self._finish(futures[f])
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.time() - start, 1)
        return len(todo)


def _run_module(name, argv):
    """module `name`'s main on argv, in a worker process (a UserError reaches the parent as itself)."""
    module = importlib.import_module(name)
    module.main(module.get_parser().parse_args(argv))
