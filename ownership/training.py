"""The one training loop, used for victims, benign and independent models and every attack.

Targets are true labels (cross-entropy), precomputed soft labels (KL to a queried softmax), or a
teacher model queried on each augmented batch (distillation). Optimiser and schedule follow Dataset
Inference [DI]: SGD, momentum 0.9, wd 5e-4; the learning rate rises linearly from 0 to lr_max at
40 % of training, falls to lr_max/10 at 80 % and to 0 at the end.
"""
import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import augment as augment_batch, batches, normalise


def lr_at(step, total, lr_max):
    return float(np.interp(step, [0, 0.4 * total, 0.8 * total, total], [0, lr_max, lr_max / 10, 0]))


def autocast(device, amp):
    if amp == "bf16" and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def soft_ce(logits, probs, temperature=1.0):
    """KL(probs || softmax(logits / T)) up to a constant, times T^2 (Hinton et al.)."""
    return -(probs * F.log_softmax(logits / temperature, 1)).sum(1).mean() * temperature ** 2


def train(model, images, dataset, *, epochs, lr, batch, momentum=0.9, wd=5e-4, device="cpu", seed=0,
          soft=None, teacher=None, teacher_hard=False, temperature=1.0, augment=True, amp=None,
          desc="train"):
    """Train `model` in place on ImageSet `images` and return it."""
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd,
                          nesterov=False)
    gen = torch.Generator().manual_seed(seed)
    n = len(images)
    steps_per_epoch = max(1, n // batch) if n >= batch else 1
    total = epochs * steps_per_epoch
    step = 0
    bar = tqdm(total=total, desc=desc, leave=False, unit="step")
    for _ in range(epochs):
        model.train()
        for idx in batches(n, batch, shuffle=True, generator=gen, drop_last=True):
            x = normalise(images.x[idx], dataset, device)
            if augment:
                x = augment_batch(x, dataset, gen)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr)
            with autocast(device, amp):
                logits = model(x)
                if teacher is not None:
                    with torch.no_grad():
                        t = teacher(x).float()
                    loss = (F.cross_entropy(logits.float(), t.argmax(1)) if teacher_hard
                            else soft_ce(logits.float(), F.softmax(t / temperature, 1), temperature))
                elif soft is not None:
                    loss = soft_ce(logits.float(), soft[idx].to(device), temperature)
                else:
                    loss = F.cross_entropy(logits.float(), images.y[idx].to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}; lower the lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model


@torch.no_grad()
def predict(model, images, dataset, device="cpu", batch=512):
    """Softmax outputs (N, C) on un-augmented images."""
    model.eval()
    out = []
    for idx in batches(len(images), batch):
        out.append(F.softmax(model(normalise(images.x[idx], dataset, device)).float(), 1).cpu())
    return torch.cat(out)


def accuracy(model, images, dataset, device="cpu", batch=512):
    if len(images) == 0:
        return float("nan")
    return (predict(model, images, dataset, device, batch).argmax(1) == images.y).float().mean().item()
