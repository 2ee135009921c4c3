"""A toy stage module for tests/test_manifest.py's worker-process tests: writes --text, the first word
of each --src file, the process id and its torch thread count to --out, after --sleep seconds; --fail
raises a UserError instead. Importable by name, as Stages.run_all's workers need."""
import argparse
import os
import time

import torch

from ownership.errors import UserError


def get_parser():
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--text", default="")
    p.add_argument("--src", nargs="*", default=[])
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--fail", action="store_true")
    return p


def main(args):
    time.sleep(args.sleep)
    if args.fail:
        raise UserError(f"toy failure of {args.out}")
    with open(args.out, "w") as f:
        text = "+".join([args.text] + [open(src).read().split()[0] for src in args.src])
        f.write(f"{text} {os.getpid()} {torch.get_num_threads()}")
