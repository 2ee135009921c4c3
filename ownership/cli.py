"""What every script shares: flags, seeding, device choice, and one-line errors instead of tracebacks."""
import argparse
import os
import random
import sys
import warnings

import numpy as np
import torch

from network import UnknownArchitecture

from .constants import AMP, REPO
from .errors import UserError
from .presets import DATASETS, PRESETS, get_preset


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'script.py: error: argument --mode: invalid choice ...'."""

    def __init__(self, description=None, **kw):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(description=description, **kw)

    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def add_common(parser, dataset=True):
    """Flags every stage shares. Folder defaults are the repository's own folders, so the
    scripts work from any working directory."""
    if dataset:
        parser.add_argument("--dataset", default="fmnist", choices=list(DATASETS),
                            help="dataset (default: fmnist, the offline CPU default)")
    parser.add_argument("--gpu", type=int, default=None,
                        help="CUDA device index; default: cuda if present, else cpu")
    parser.add_argument("--seed", type=int, default=0, help="one seed for everything")
    parser.add_argument("--data-dir", "--data_dir", default=os.path.join(REPO, "data"))
    parser.add_argument("--model-dir", "--model_dir", default=os.path.join(REPO, "model"))
    parser.add_argument("--grad-dir", "--grad_dir", default=os.path.join(REPO, "gradients_set"))
    parser.add_argument("--prob-dir", "--prob_dir", default=os.path.join(REPO, "prob"))
    parser.add_argument("--gamma", type=float, default=0.1,
                        help="fraction of the training set that carries the external feature (names the "
                             "transformed folder, e.g. fmnist_seurat_10%%)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic GPU kernels (cuDNN/cuBLAS); the CPU is deterministic anyway")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def add_preset(parser):
    """--preset and --scale, for the scripts that run a stage of the pipeline; see `preset_of`."""
    parser.add_argument("--preset", default="fmnist", choices=list(PRESETS),
                        help="hyperparameters and protocol (ownership/presets.py; default: fmnist, the embedded default)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every budget and, below 1, the data (get_preset in ownership/presets.py)")
    return parser


def white_box(dataset):
    """The white-box features of `dataset`'s own preset (DATASETS[dataset]["preset"]): dict(feature,
    augment), the defaults of gradientset.py and train_clf.py."""
    return PRESETS[DATASETS[dataset]["preset"]]["white_box"]


def black_box_feature(dataset):
    """The black-box feature (constants.BLACK_BOX_FEATURES) of `dataset`'s own preset: the default of
    train_clf.py --access black-box."""
    return PRESETS[DATASETS[dataset]["preset"]]["black_box_feature"]


def preset_of(args):
    """The preset that --preset and --scale ask for."""
    return get_preset(args.preset, args.scale)


def add_amp(parser):
    """--amp, for the scripts that train (train_model.py, steal.py) and run them (reproduce.py, evaluate.py)."""
    parser.add_argument("--amp", default="auto", choices=list(AMP),
                        help="mixed precision of the training steps: auto = bf16 autocast on CUDA and on CPUs with "
                             "native bf16 (AVX512-BF16/AMX), fp32 elsewhere; none = fp32 everywhere")
    return parser


def make_deterministic():
    """Same seed, same numbers on CUDA too: deterministic cuDNN/cuBLAS kernels (slower; see README)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def get_device(gpu):
    """--gpu N -> cuda:N; no flag -> cuda if present; no CUDA -> one line and the CPU."""
    if not torch.cuda.is_available():
        if gpu is not None:
            print(f"note: --gpu {gpu} given but no CUDA device exists; running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    if not torch.backends.cudnn.deterministic:
        torch.backends.cudnn.benchmark = True
    if gpu is None:
        return torch.device("cuda")
    if gpu >= torch.cuda.device_count():
        raise UserError(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device(f"cuda:{gpu}")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(main, parser, argv=None):
    """Parse, run main(args), and turn UserError (and missing files) into one stderr line, exit 2."""
    args = parser.parse_args(argv)
    if getattr(args, "deterministic", False):
        make_deterministic()
    if getattr(args, "debug", False):
        return main(args)
    warnings.filterwarnings("ignore", message=".*TypedStorage.*")
    try:
        return main(args)
    except (UserError, UnknownArchitecture) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finished artefacts are kept, rerun to resume", file=sys.stderr)
        sys.exit(130)
