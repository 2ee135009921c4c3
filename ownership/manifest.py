"""The stage manifest of reproduce.py: which stages are done, so an interrupted run resumes.

A stage is keyed by its first output and recorded with its module, argv, preset hash, seed, and the
sha256 of its inputs and outputs (`checksum`). It is skipped when that record matches and its
outputs still have the recorded checksums.
"""
import hashlib
import json
import os
import shutil
import time

from . import jsonio


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
        self.preset_hash = hashlib.sha256(json.dumps(preset, sort_keys=True, default=str).encode()).hexdigest()[:16]
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

    def run(self, stage, outputs, module, argv, inputs=()):
        outputs = [outputs] if isinstance(outputs, str) else outputs
        record = dict(stage=stage, module=module.__name__, argv=argv, preset=self.preset_hash, seed=self.seed,
                      inputs={p: self.checksum(p) for p in inputs})
        old = self.done.get(outputs[0])
        old = old if isinstance(old, dict) else {}  # a manifest of an older version: redo
        made = old.get("outputs", {})
        if (not self.force and {k: old.get(k) for k in record} == record
                and all(self.checksum(o) is not None and self.checksum(o) == made.get(o) for o in outputs)):
            return False
        for o in outputs:  # changed since its stage made it: never let the stage take it as done
            if o in made and self.checksum(o) not in (None, made[o]):
                print(f"{o} changed since {stage} made it (checksum differs); redoing {stage}")
                if os.path.isdir(o):
                    shutil.rmtree(o)
                else:
                    os.remove(o)
        start = time.time()
        module.main(module.get_parser().parse_args(argv))
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.time() - start, 1)
        for o in outputs:
            self.sums.pop(o, None)
        self.done[outputs[0]] = dict(record, outputs={o: self.checksum(o) for o in outputs})
        jsonio.write(self.path, self.done)
        return True
