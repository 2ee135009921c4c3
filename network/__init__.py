"""Architectures and the one registry of their names.

    model = get_model("wrn16-1", num_classes=10, in_channels=1)

Names used by the reference commands are kept: wrn28-10, wrn16-1, resnet18-imgnet, resnet34-imgnet.
The small widths serve the CPU-sized Fashion-MNIST default (wrn16-1 victim, wrn10-1 attackers);
wrn10-2 and wrn16-2 are kept for other experiments.
"""
from functools import partial

from .mlp import MetaMLP, default_hidden
from .resnet_imagenet import resnet18, resnet34
from .wide_resnet import WideResNet

MODELS = {
    "wrn28-10": partial(WideResNet, 28, 10, dropout=0.3),  # CIFAR-10 victim (paper, Sec. 5.1)
    "wrn16-1": partial(WideResNet, 16, 1),                 # CIFAR-10 attackers (paper, Sec. 5.1); Fashion-MNIST victim
    "wrn16-2": partial(WideResNet, 16, 2),
    "wrn10-2": partial(WideResNet, 10, 2),                 # an earlier Fashion-MNIST victim (CPU-sized)
    "wrn10-1": partial(WideResNet, 10, 1),                 # Fashion-MNIST attackers (CPU-sized)
    "resnet34-imgnet": resnet34,                           # ImageNet-20 victim (paper, Sec. 5.1)
    "resnet18-imgnet": resnet18,                           # ImageNet-20 attackers (paper, Sec. 5.1)
}


class UnknownArchitecture(ValueError):
    """An architecture name that is not in MODELS."""


def get_model(name, num_classes, in_channels=3):
    """Build architecture `name`; an unknown name is an error that lists the known ones."""
    if name not in MODELS:
        raise UnknownArchitecture(f"unknown architecture {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)


__all__ = ["MODELS", "get_model", "UnknownArchitecture", "MetaMLP", "default_hidden", "WideResNet"]
