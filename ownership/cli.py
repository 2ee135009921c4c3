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


def add_common(parser, dataset=True, preset=False):
    """Flags every stage shares. Folder defaults are the repository's own folders, so the
    scripts work from any working directory. With `preset`, also --preset and --scale (add_preset):
    the stage then takes every value it does not get as a flag from that preset (`preset_of`), so
    --dataset and --gamma default to the preset's."""
    if preset:
        add_preset(parser, default=None)
    if dataset:
        parser.add_argument("--dataset", default=None if preset else "fmnist", choices=list(DATASETS),
                            help="dataset (default: " + ("the preset's; without --preset fmnist, the offline CPU "
                                                         "default)" if preset else "fmnist, the offline CPU default)"))
    parser.add_argument("--gpu", type=int, default=None,
                        help="CUDA device index; default: cuda if present, else cpu")
    parser.add_argument("--seed", type=int, default=0, help="one seed for everything")
    parser.add_argument("--data-dir", "--data_dir", default=os.path.join(REPO, "data"))
    parser.add_argument("--model-dir", "--model_dir", default=os.path.join(REPO, "model"))
    parser.add_argument("--grad-dir", "--grad_dir", default=os.path.join(REPO, "gradients_set"))
    parser.add_argument("--prob-dir", "--prob_dir", default=os.path.join(REPO, "prob"))
    parser.add_argument("--gamma", type=float, default=None if preset else 0.1,
                        help="fraction of the training set that carries the external feature (names the "
                             "transformed folder, e.g. fmnist_seurat_10%%; default: " + ("the preset's)" if preset else "0.1)"))
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic GPU kernels (cuDNN/cuBLAS); the CPU is deterministic anyway")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def add_preset(parser, default="fmnist"):
    """--preset and --scale: the hyperparameters a script reads (see `preset_of`)."""
    parser.add_argument("--preset", default=default, choices=list(PRESETS),
                        help="hyperparameters and protocol (ownership/presets.py; default: " +
                             ("the --dataset's own preset, fmnist without --dataset)" if default is None else
                              f"{default}, the embedded default)"))
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every budget and, below 1, the data (get_preset in ownership/presets.py)")
    return parser


def preset_of(args):
    """The one hand-off of a preset to a stage: the preset that --preset and --scale ask for (without
    --preset: the --dataset's own, DATASETS[dataset]["preset"], else fmnist). Fills in what the stage
    did not get as a flag: args.preset (its name), args.dataset, and args.gamma (where the script has
    --gamma). Every stage of reproduce.py gets `--preset NAME --scale S` and nothing it could read from
    the preset, so a reference command with the same --preset trains what reproduce.py trains.
    Raises UserError when --dataset disagrees with --preset."""
    dataset = getattr(args, "dataset", None)
    name = args.preset or DATASETS[dataset or "fmnist"]["preset"]
    preset = get_preset(name, args.scale)
    if dataset is not None and dataset != preset["dataset"]:
        raise UserError(f"--dataset {dataset} disagrees with --preset {name} (a {preset['dataset']} preset); "
                        f"drop --dataset or pass --preset {DATASETS[dataset]['preset']}")
    args.preset, args.dataset = name, preset["dataset"]
    if getattr(args, "gamma", None) is None:
        args.gamma = preset["gamma"]
    return preset


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
