"""A toy stage module for tests/test_manifest.py's worker-process tests: writes --text, the first word
of each --src file, the process id and its torch thread count to --out. Importable by name, as
Stages.run_all's workers need."""
import argparse
import os

import torch


def get_parser():
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--text", default="")
    p.add_argument("--src", nargs="*", default=[])
    return p


def main(args):
    with open(args.out, "w") as f:
        text = "+".join([args.text] + [open(src).read().split()[0] for src in args.src])
        f.write(f"{text} {os.getpid()} {torch.get_num_threads()}")
