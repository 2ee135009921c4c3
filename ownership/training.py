"""The one training loop, used for victims, benign and independent models and every attack.

Targets are true labels (cross-entropy), precomputed soft labels (KL to a queried softmax), or a
teacher model queried on each augmented batch (distillation). Optimiser follows Dataset Inference
[DI]: SGD, momentum 0.9, wd 5e-4. Schedules (lr_at): 'triangular' [DI] rises linearly from 0 to lr_max
at 40 % of training, falls to lr_max/10 at 80 % and to 0 at the end; 'onecycle' (Smith & Topin 2019,
torch's OneCycleLR shape) rises by a half cosine from lr_max/25 to lr_max over the first 25 % and
falls by a half cosine to lr_max/25e4. Augmentation and label smoothing are the caller's (the preset's)
choice; docs/BENCHMARKS.md "Training recipe" measures them.
"""
import contextlib
import functools
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed as dd
from . import seeds
from .checkpoints import load_checkpoint, model_record, remove, save_checkpoint
from .constants import AMP
from .data import augment as augment_batch, batches, normalise, role_data
from .errors import UserError
from .presets import DATASETS


SCHEDULES = ("triangular", "onecycle")


def lr_at(step, total, lr_max, schedule="triangular"):
    """The learning rate of step `step` of `total` (see the module docstring)."""
    if schedule == "triangular":
        return float(np.interp(step, [0, 0.4 * total, 0.8 * total, total], [0, lr_max, lr_max / 10, 0]))
    if schedule == "onecycle":
        warm = 0.25 * total
        lo, end = lr_max / 25, lr_max / 25e4
        if step < warm:
            return float(lo + (lr_max - lo) * (1 - math.cos(math.pi * step / warm)) / 2)
        t = (step - warm) / max(total - warm, 1)
        return float(end + (lr_max - end) * (1 + math.cos(math.pi * min(t, 1.0))) / 2)
    raise UserError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


@functools.cache
def cpu_has_bf16():
    """True on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), where oneDNN runs bf16 convolutions
    fast; elsewhere bf16 is emulated and slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def amp_dtype(device, amp):
    """The autocast dtype for `amp`: 'none' -> None (fp32); 'bf16' -> bf16; 'auto' -> bf16 on CUDA and on
    CPUs with native bf16 (cpu_has_bf16), fp32 elsewhere. bf16 training measured in docs/BENCHMARKS.md."""
    if amp not in AMP:
        raise UserError(f"amp must be one of {AMP}, got {amp!r}")
    if amp == "bf16" or (amp == "auto" and (torch.device(device).type == "cuda" or cpu_has_bf16())):
        return torch.bfloat16
    return None


def amp_name(device, amp):
    """'bf16' or 'fp32': what `amp` means on `device`, as the checkpoints record it."""
    return "bf16" if amp_dtype(device, amp) else "fp32"


def autocast(device, amp):
    """bf16 autocast where amp_dtype says so (only the training steps use it); a no-op for fp32."""
    dtype = amp_dtype(device, amp)
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype else contextlib.nullcontext()


RECIPE = ("augment", "label_smoothing", "schedule")


def recipe(cfg):
    """The recipe keys of a preset's training or attack config, as train() takes them. Every preset
    names all three (no default here can disagree with a preset)."""
    missing = [k for k in RECIPE if k not in cfg]
    if missing:
        raise UserError(f"training config {cfg} lacks {missing}; the presets give {list(RECIPE)}")
    return {k: cfg[k] for k in RECIPE}


def soft_ce(logits, probs, temperature=1.0):
    """KL(probs || softmax(logits / T)) up to a constant, times T^2 (Hinton et al.)."""
    return -(probs * F.log_softmax(logits / temperature, 1)).sum(1).mean() * temperature ** 2


def train(model, images, dataset, *, epochs, lr, batch, momentum=0.9, wd=5e-4, device="cpu", seed=0,
          soft=None, teacher=None, teacher_hard=False, temperature=1.0, augment=True, label_smoothing=0.0,
          schedule="triangular", amp="auto", desc="train", state_path=None):
    """Train `model` in place on ImageSet `images` and return it.

    `augment`: True for the dataset's training transform (data.augment) on every batch, "flip" for its
    horizontal flip alone, False for none. `label_smoothing` applies to hard targets (true labels, a
    teacher's argmax); soft targets are used as they are.
    `schedule`: 'triangular' or 'onecycle' (lr_at). The presets pass all three (ownership/presets.py).

    Under torchrun the model is wrapped in DistributedDataParallel: every rank shuffles with the same
    seed, takes its share of each global batch (batch // world images), and augments with a seed
    offset by its rank; gradients are averaged, so the global batch and schedule stay the same.

    With `state_path`, the model, optimiser and random state are saved there after every epoch, and a
    run that finds the file resumes after its last finished epoch, with the same result as an
    uninterrupted run. The caller removes the file once the final checkpoint is written.
    """
    if schedule not in SCHEDULES:
        raise UserError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if augment not in (True, False, "flip"):
        raise UserError(f"augment must be true, false or 'flip', got {augment!r}")
    model.to(device, memory_format=torch.channels_last).train()  # faster on CPU (oneDNN) and GPU
    net = model
    if dd.world() > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if torch.device(device).type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd,
                          nesterov=False)
    gen = torch.Generator().manual_seed(seed)  # the same shuffle on every rank
    aug_gen = torch.Generator().manual_seed(seed + 1000003 * dd.rank())
    n = len(images)
    steps_per_epoch = max(1, n // batch) if n >= batch else 1
    total = epochs * steps_per_epoch
    step, first_epoch = _resume(state_path, model, opt, gen, aug_gen, device, epochs)
    bar = tqdm(total=total, initial=step, desc=desc, leave=False, unit="step", disable=not dd.is_main())
    for epoch in range(first_epoch, epochs):
        model.train()
        for idx in batches(n, batch, shuffle=True, generator=gen, drop_last=True):
            if dd.world() > 1:
                idx = idx[dd.shard(len(idx))]
            x = normalise(images.x[idx], dataset, device)
            if augment:
                x = augment_batch(x, dataset, aug_gen if dd.world() > 1 else gen, flip_only=augment == "flip")
            x = x.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr, schedule)
            with autocast(device, amp):
                logits = net(x)
                if teacher is not None:
                    with torch.no_grad():
                        t = teacher(x).float()
                    loss = (F.cross_entropy(logits.float(), t.argmax(1), label_smoothing=label_smoothing)
                            if teacher_hard else soft_ce(logits.float(), F.softmax(t / temperature, 1), temperature))
                elif soft is not None:
                    loss = soft_ce(logits.float(), soft[idx].to(device), temperature)
                else:
                    loss = F.cross_entropy(logits.float(), images.y[idx].to(device), label_smoothing=label_smoothing)
            if not torch.isfinite(loss):
                raise UserError(f"{desc}: the loss became {loss.item()} at step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if state_path and dd.is_main():
            save_checkpoint(state_path, dict(state_dict=model.state_dict(), optimizer=opt.state_dict(),
                                             generator=gen.get_state(), aug_generator=aug_gen.get_state(),
                                             global_rng=seeds.rng_state(device), step=step, epoch=epoch + 1))
    bar.close()
    model.eval()
    return model


def _resume(state_path, model, opt, gen, aug_gen, device, epochs):
    """(step, epoch) to go on from: those of the training state at `state_path` (train), which is loaded
    into the model, optimiser and random generators, or (0, 0) where there is none. Raises UserError for
    the state of a run longer than `epochs` (e.g. an untrained model's path once trained)."""
    if not (state_path and os.path.exists(state_path)):
        return 0, 0
    st = load_checkpoint(state_path, "training state")
    model.load_state_dict(st["state_dict"])
    opt.load_state_dict(st["optimizer"])
    gen.set_state(st["generator"])
    aug_gen.set_state(st["aug_generator"])
    if "global_rng" in st:  # dropout (WRN-28-10) draws from the global random state
        seeds.set_rng_state(st["global_rng"], device)
    if st["epoch"] > epochs:
        raise UserError(f"{state_path} holds epoch {st['epoch']} of a longer run than these {epochs} epochs; "
                        "delete it to train from the start")
    return st["step"], st["epoch"]


# every forward pass without gradients (accuracy, black-box queries, a victim's soft labels) runs in
# channels_last at batch 64: 2.2-2.5x the images/s of the contiguous batch-512 pass on one or two CPU
# threads (wrn16-1, wrn10-1; docs/BENCHMARKS.md, "Inference")
INFER_BATCH = 64


@torch.no_grad()
def softmax(model, x, dataset, device="cpu", batch=INFER_BATCH, temperature=1.0):
    """float32 (N, num_classes) softmax of `model`'s logits / `temperature` on uint8 images x
    (N, C, H, W), normalised as in training, in eval mode. The model runs in channels_last and is
    given back in the layout it came in, so that a pass leaves no trace on what runs after it (float32
    sums may differ between layouts)."""
    was_cl = any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                 for p in model.parameters())
    model.eval().to(memory_format=torch.channels_last)
    out = []
    try:
        for idx in batches(len(x), batch):
            xb = normalise(x[idx], dataset, device).contiguous(memory_format=torch.channels_last)
            out.append(F.softmax(model(xb).float() / temperature, 1).cpu())
    finally:
        if not was_cl:
            model.to(memory_format=torch.contiguous_format)
    return torch.cat(out)


def predict(model, images, dataset, device="cpu", batch=INFER_BATCH, temperature=1.0):
    """Softmax outputs (N, C) on un-augmented images (an ImageSet), of the logits divided by `temperature`."""
    return softmax(model, images.x, dataset, device, batch, temperature)


def accuracy(model, images, dataset, device="cpu", batch=INFER_BATCH):
    if len(images) == 0:
        return float("nan")
    return (predict(model, images, dataset, device, batch).argmax(1) == images.y).float().mean().item()


def save_trained(model, out, state, *, preset, data_dir, seed, gamma, device, amp, start, arch, **record):
    """The end of every training stage (train_model.py, steal.py): the model's clean and stylised test
    accuracy (fractions) into the checkpoint's metrics, the checkpoint written by rank 0 only (the
    resumable `state` file removed), one line printed. `record` adds to the checkpoint dict; its
    `metrics` entry, if any, adds to the metrics. Returns (out, metrics)."""
    dataset = preset["dataset"]
    metrics = dict(clean_acc=accuracy(model, role_data(preset, data_dir, seed, "test"), dataset, device),
                   stylised_acc=accuracy(model, role_data(preset, data_dir, seed, "styled-test", gamma), dataset, device),
                   **record.pop("metrics", {}), amp=amp_name(device, amp), seconds=round(time.time() - start, 1))
    if not dd.is_main():
        return out, metrics
    d = DATASETS[dataset]
    save_checkpoint(out, model_record(model, arch, d["num_classes"], d["channels"], dataset, preset=preset, seed=seed,
                                      metrics=metrics, world_size=dd.world(), **record))
    remove(state)
    print(f"{out}: clean acc {metrics['clean_acc']:.4f}, stylised acc {metrics['stylised_acc']:.4f} "
          f"({metrics['seconds']} s)")
    return out, metrics
