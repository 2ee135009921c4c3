"""The stage manifest of reproduce.py: which jobs are done, so an interrupted run resumes.

A job (`Task`) is keyed by its first output and recorded with its stage, module, `settings` (what
decides its output besides its inputs' bytes: reproduce.py records its flags, the run's flags and the
values of the preset keys it reads, ownership/plan.py) and the sha256 of its inputs and outputs
(`checksum`), and the seconds it ran. It is skipped when that record matches and its outputs still have the
recorded checksums.
"""
import collections
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

# one job: stage name, outputs (a path or a list, the first its key), module (a module or its name, whose
# main(get_parser().parse_args(argv)) runs it), argv, inputs (paths), settings (JSON-ready)
Task = collections.namedtuple("Task", "stage outputs module argv inputs settings", defaults=((), None))


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


def _outputs(task):
    return [task.outputs] if isinstance(task.outputs, str) else list(task.outputs)


def _changed(old, new, prefix=""):
    """The keys of dict `new` whose values differ in `old`, dotted one level into dicts ("reads.train")."""
    keys = []
    for k in dict.fromkeys(list(new) + list(old)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and not prefix:
            keys += _changed(a, b, f"{k}.")
        elif a != b:
            keys.append(prefix + k)
    return keys


class Stages:
    """Runs jobs (`Task`s) and records each finished one in manifest.json, keyed by its first output:
    its stage, module, settings, the checksums of its input files and of its outputs. A job is skipped
    when that record matches and its outputs exist with the recorded checksums; an output changed since
    (corrupted, replaced) is removed and its job rerun. Since the inputs' checksums are part of the
    record, every later job that consumes a changed output reruns too. A rerun that gives the same bytes
    changes nothing downstream: on the CPU a gradient set does; a checkpoint does not, as it records its
    training time, so the jobs after a retrained model rerun. A manifest of an older version (one hash
    of the whole preset per job) is read, said so in one line, and its jobs redone once."""

    def __init__(self, manifest_path, force=False):
        self.path = manifest_path
        self.force = force
        self.done = {}
        if os.path.exists(manifest_path) and not force:
            with open(manifest_path) as f:
                self.done = json.load(f)
            if any(isinstance(r, dict) and "settings" not in r for r in self.done.values()):
                print(f"note: {manifest_path} was written by an older reproduce.py (one hash of the whole preset per "
                      f"job); its jobs are redone once and recorded by what each reads (pass --force to say so)")
        self.sums = {}  # path -> checksum, each file read once per run
        self.timings = {}

    def checksum(self, path):
        if path not in self.sums:
            self.sums[path] = checksum(path) if os.path.exists(path) else None
        return self.sums[path]

    def record(self, task):
        """The manifest record `task` would get (before its outputs' checksums)."""
        module = task.module if isinstance(task.module, str) else task.module.__name__
        settings = json.loads(json.dumps(task.settings if task.settings is not None else dict(argv=list(task.argv))))
        return dict(stage=task.stage, module=module, settings=settings, inputs={p: self.checksum(p) for p in task.inputs})

    def why(self, task):
        """Why `task` must run (one phrase), or None when it is done: its record matches the manifest and
        its outputs have the recorded checksums. Changes nothing on disk."""
        if self.force:
            return "--force"
        record, old = self.record(task), self.done.get(_outputs(task)[0])
        if not isinstance(old, dict):
            return "not run yet"
        if "settings" not in old:
            return "recorded by an older reproduce.py"
        for key in ("stage", "module"):
            if old.get(key) != record[key]:
                return f"its {key} changed"
        changed = _changed(old.get("settings", {}), record["settings"])
        if changed:
            return "changed: " + ", ".join(changed)
        inputs = [p for p in record["inputs"] if old.get("inputs", {}).get(p) != record["inputs"][p]]
        if inputs or set(old.get("inputs", {})) != set(record["inputs"]):
            return "inputs changed: " + ", ".join(inputs or ["the list"])
        made = old.get("outputs", {})
        for o in _outputs(task):
            if self.checksum(o) is None:
                return f"{o} is missing"
            if self.checksum(o) != made.get(o):
                return f"{o} changed since it was made"
        return None

    def pending(self, task):
        """The job's record if it must run (an output changed since its job made it is removed first),
        else None."""
        if self.why(task) is None:
            return None
        made = self.done.get(_outputs(task)[0])
        made = made.get("outputs", {}) if isinstance(made, dict) else {}
        for o in _outputs(task):  # changed since its stage made it: never let the stage take it as done
            if o in made and self.checksum(o) not in (None, made[o]):
                print(f"{o} changed since {task.stage} made it (checksum differs); redoing {task.stage}")
                if os.path.isdir(o):
                    shutil.rmtree(o)
                else:
                    os.remove(o)
                self.sums.pop(o, None)
        return dict(self.record(task), outputs=_outputs(task))

    def status(self, tasks):
        """[(task, reason)] without running anything: reason None for a job that is done, else why it
        must run; a job whose inputs a pending job makes waits for it (the list names a job after the
        jobs it reads from)."""
        made_by, pending, out = {}, set(), []
        for i, t in enumerate(tasks):
            made_by.update({o: i for o in _outputs(t)})
            waits = [p for p in t.inputs if made_by.get(p, i) in pending]
            reason = f"after {waits[0]}{f' and {len(waits) - 1} more' if len(waits) > 1 else ''}" if waits else self.why(t)
            if reason is not None:
                pending.add(i)
            out.append((t, reason))
        return out

    def _finish(self, record):
        """Record a job that ran: its outputs' checksums, written to the manifest at once."""
        outputs = record["outputs"]
        for o in outputs:
            self.sums.pop(o, None)
        self.done[outputs[0]] = dict(record, outputs={o: self.checksum(o) for o in outputs})
        jsonio.write(self.path, self.done)

    def run(self, task):
        """Run one job in this process unless it is done. Returns whether it ran."""
        return self.run_all([task]) == 1

    def run_all(self, jobs, workers=1, threads=None):
        """Run the jobs that are not done, [Task], in list order as far
        as their inputs allow: a job whose inputs include another listed job's outputs waits for that
        job, and whether it must run at all is decided then (on the inputs as they came out). The list
        must name a job after the jobs it reads from (ValueError otherwise). With `workers` 1 the jobs run
        in this process, else in `workers` processes of `threads` torch threads each, the first ready job
        of the list going to the first free process (small models leave the threads of one process idle:
        two single-thread processes train about 1.3x (fp32) to 1.6x (bf16) as fast on 2 cores,
        docs/BENCHMARKS.md), so the stages overlap. Each job is recorded as it finishes, so an interrupted
        run resumes; when a job fails, the jobs running beside it are finished and recorded before its
        error is raised. A job always runs under the same thread count, so a redone job gives the same
        bytes as the first run. self.timings[stage] grows by the seconds its jobs ran (with several workers
        the stages of one call add up to about `workers` times its wall clock). Returns the number of jobs
        run."""
        schedule = _Schedule(self, jobs)
        if workers > 1:
            return _run_in_pool(schedule, workers, threads) if schedule.left() else 0
        n = 0
        while (i := schedule.ready()) is not None:
            schedule.started(i)
            _run_module(jobs[i].module, jobs[i].argv)
            schedule.finished(i)
            n += 1
        return n


class _Schedule:
    """Where each job of one Stages.run_all call stands: state[i] is 'todo' (to run), 'wait' (its inputs
    are still to be made; whether it must run is decided once they exist), 'running' or 'done'."""

    def __init__(self, stages, jobs):
        self.stages, self.jobs = stages, jobs
        made_by = {o: i for i, job in enumerate(jobs) for o in _outputs(job)}  # output -> the job that makes it
        self.deps = []
        for i, job in enumerate(jobs):
            d = {made_by[p] for p in job.inputs if p in made_by}
            if any(k >= i for k in d):
                raise ValueError(f"job {job.outputs} is listed before a job whose outputs it reads")
            self.deps.append(d)
        self.state, self.records, self.began = {}, {}, {}
        for i, job in enumerate(jobs):
            if any(self.state[k] != "done" for k in self.deps[i]):
                self.state[i] = "wait"
                continue
            self.records[i] = stages.pending(job)
            self.state[i] = "done" if self.records[i] is None else "todo"

    def left(self, *states):
        """How many jobs are to run or wait (and in `states` too)."""
        return sum(v in ("todo", "wait") + states for v in self.state.values())

    def ready(self):
        """The first job that can start now (its record made), or None. A waiting job whose inputs came
        out so that it need not run is marked done, which may make a later job ready."""
        i = 0
        while i < len(self.jobs):
            if self.state[i] in ("todo", "wait") and all(self.state[k] == "done" for k in self.deps[i]):
                if self.state[i] == "todo":
                    return i
                self.records[i] = self.stages.pending(self.jobs[i])
                if self.records[i] is not None:
                    return i
                self.state[i] = "done"
                i = 0  # a job it held back may be ready now
                continue
            i += 1
        return None

    def started(self, i):
        self.state[i], self.began[i] = "running", time.time()

    def finished(self, i):
        """Record job i as done, with the seconds it ran (its record's `seconds`: what one job costs, in the
        worker it ran in), and add them to its stage's timing."""
        seconds = round(time.time() - self.began[i], 1)
        self.stages._finish(dict(self.records[i], seconds=seconds))
        self.state[i] = "done"
        stage, timings = self.jobs[i].stage, self.stages.timings
        timings[stage] = round(timings.get(stage, 0.0) + seconds, 1)


def _run_in_pool(schedule, workers, threads):
    """Stages.run_all with several workers: even one job goes to a worker (its thread count, its numbers).
    They start with `threads` threads and no per-epoch progress bars (the environment is read when they
    start; this process shows one bar over the jobs). Returns the number of jobs run."""
    jobs, n = schedule.jobs, 0
    env = dict(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    left = schedule.left()
    try:
        with ProcessPoolExecutor(min(workers, left), multiprocessing.get_context("spawn")) as pool, \
                tqdm(total=left, desc=f"{' + '.join(dict.fromkeys(j.stage for j in jobs))} ({workers} processes)") as bar:
            running = {}
            while True:
                while len(running) < workers and (i := schedule.ready()) is not None:
                    schedule.started(i)
                    module = jobs[i].module if isinstance(jobs[i].module, str) else jobs[i].module.__name__
                    running[pool.submit(_run_module, module, jobs[i].argv)] = i  # by name
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                failed = [f for f in done if f.exception() is not None]
                if failed:  # a job's error ends the run, as it would in one process, once the jobs beside
                    # it have finished and been recorded (a resume skips them)
                    print(f"{jobs[running[failed[0]]].outputs} failed; finishing the {len(running) - len(failed)} "
                          f"job(s) running beside it", file=sys.stderr, flush=True)
                    for f in wait(running).done:
                        if f.exception() is None:
                            schedule.finished(running[f])
                    failed[0].result()
                for f in done:
                    schedule.finished(running.pop(f))
                    n += 1
                bar.total = n + schedule.left("running")
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
