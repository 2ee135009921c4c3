"""A toy stage module for tests/test_manifest.py's worker-process test: writes --text, the process id
and its torch thread count to --out. Importable by name, as Stages.run_all's workers need."""
import argparse
import os

import torch


def get_parser():
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--text", default="")
    return p


def main(args):
    with open(args.out, "w") as f:
        f.write(f"{args.text} {os.getpid()} {torch.get_num_threads()}")
