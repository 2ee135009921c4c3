"""Black-box features (MOVE): how much a model's prediction on an image moves when the image carries
the external feature. Needs only the model's softmax outputs, so it works on a suspect behind an API.

For each stylised image x' with original x, the feature vector is the concatenation over K views v_k
of softmax(M(x)) - softmax(M(v_k(x'))), where v_0 is x' itself and v_1..v_{K-1} are seeded draws of
the training transform (crop/flip or rotation/flip). A model that learned the style (the victim and
models stolen from it) predicts x' like x; a benign model does not.
"""
import torch
import torch.nn.functional as F

from .data import augment, batches, load_dataset, normalise
from .errors import UserError


def originals(styled, dataset, data_dir, split):
    """The clean images that the stylised set `styled` was made from (same order)."""
    return load_dataset(dataset, data_dir)[split].x[styled.idx]


@torch.no_grad()
def features(model, styled, clean_x, dataset, device, views=4, seed=0, batch_size=256):
    """(N, views * num_classes) float32 features of `model` on stylised images and their originals."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for idx in batches(len(styled), batch_size):
        p = F.softmax(model(normalise(clean_x[idx], dataset, device)).float(), 1)
        xs = normalise(styled.x[idx], dataset, device)
        diffs = [p - F.softmax(model(xs).float(), 1)]
        for _ in range(views - 1):
            diffs.append(p - F.softmax(model(augment(xs, dataset, gen)).float(), 1))
        out.append(torch.cat(diffs, 1).cpu())
    f = torch.cat(out)
    if not torch.isfinite(f).all():
        raise UserError("NaN or Inf in the model's predictions; the checkpoint is broken or diverged")
    return f.numpy()
