"""The ownership meta-classifier: an MLP d -> h1 -> h2 -> 2 with ReLU, returning logits.

The reference used h1 = d/8 and h2 = d/16 and put a softmax inside the network before a
cross-entropy loss (a bug: the loss then sees probabilities as logits). Here the network returns
logits; `default_hidden` caps the widths so a 22k-dim input does not need a 61M-weight layer.
"""
import torch.nn as nn


def default_hidden(d, cap=256):
    """Reference widths d/8 and d/16, capped at `cap` and `cap/2`, and at least 32 and 16 (the
    black-box features are only a few dozen wide)."""
    return max(32, min(d // 8, cap)), max(16, min(d // 16, cap // 2))


class MetaMLP(nn.Module):
    def __init__(self, d, hidden=None):
        super().__init__()
        h1, h2 = hidden or default_hidden(d)
        self.net = nn.Sequential(nn.Linear(d, h1), nn.ReLU(inplace=True),
                                 nn.Linear(h1, h2), nn.ReLU(inplace=True),
                                 nn.Linear(h2, 2))

    def forward(self, x):
        return self.net(x)
