"""The stealing attacks (threat models of Dataset Inference [DI], as the paper follows them).

  distillation  student from scratch, KL to the victim's softmax on the victim's own training data
  zero-shot     data-free: DFAD (Fang et al. 2019) - a generator maximises and the student minimises
                the L1 distance between their logits; no real image is ever used
  fine-tune     the victim's weights, fine-tuned on other data labelled by the victim (argmax)
  label-query   student from scratch on other data, labels = the victim's argmax (one query each)
  logit-query   student from scratch on other data, KL to the victim's softmax (one query each)
  multi-stage   distillation, then fine-tuning the student on the attacker's data labelled by the victim
"""
import copy
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed as dd
from . import seeds
from .checkpoints import load_checkpoint, save_checkpoint
from .data import ImageSet
from .training import autocast, predict, recipe, train


def distillation(victim, student, data, dataset, cfg, device, seed, **kw):
    """KL to the victim's softmax at temperature T. Without augmentation every epoch shows the same
    images, so the victim is queried once per image (its softened outputs reused every epoch, the
    logit-query path) instead of once per image and epoch: the same targets, in fp32, for 1/epochs of
    the queries (docs/BENCHMARKS.md "Training recipe")."""
    temperature = cfg.get("temperature", 1.0)
    if not cfg["augment"]:
        soft = predict(victim, data, dataset, device, temperature=temperature)
        return train(student, data, dataset, epochs=cfg["epochs"], lr=cfg["lr"], batch=cfg["batch"], device=device,
                     seed=seed, soft=soft, temperature=temperature, desc="distillation", **recipe(cfg), **kw)
    return train(student, data, dataset, epochs=cfg["epochs"], lr=cfg["lr"], batch=cfg["batch"], device=device,
                 seed=seed, teacher=victim, temperature=temperature, desc="distillation", **recipe(cfg),
                 **kw)


def _labelled_by_victim(victim, data, dataset, device):
    return ImageSet(data.x, predict(victim, data, dataset, device).argmax(1), data.classes, data.idx)


def label_query(victim, student, data, dataset, cfg, device, seed, desc="label-query", **kw):
    """Train `student` on `data` labelled by the victim's argmax (one query per image)."""
    return train(student, _labelled_by_victim(victim, data, dataset, device), dataset, epochs=cfg["epochs"],
                 lr=cfg["lr"], batch=cfg["batch"], device=device, seed=seed, desc=desc, **recipe(cfg), **kw)


def fine_tune(victim, data, dataset, cfg, device, seed, **kw):
    return label_query(victim, copy.deepcopy(victim), data, dataset, cfg, device, seed, desc="fine-tune", **kw)


def logit_query(victim, student, data, dataset, cfg, device, seed, **kw):
    soft = predict(victim, data, dataset, device)
    return train(student, data, dataset, epochs=cfg["epochs"], lr=cfg["lr"], batch=cfg["batch"], device=device,
                 seed=seed, soft=soft, desc="logit-query", **recipe(cfg), **kw)


class Generator(nn.Module):
    """DFAD/ZSKT generator: z -> Linear -> 2w x s/4 x s/4 -> two x2 upsampling conv blocks -> image,
    ending in BatchNorm (affine-free) so its output matches normalised inputs. w = 64 is DFAD's
    (128 channels after the linear layer); the CPU presets use a narrower one."""

    def __init__(self, z_dim, channels, size, width=64):
        super().__init__()
        self.s0 = math.ceil(size / 4)
        self.size, self.c0 = size, 2 * width
        self.fc = nn.Linear(z_dim, self.c0 * self.s0 * self.s0)
        self.net = nn.Sequential(
            nn.BatchNorm2d(self.c0), nn.Upsample(scale_factor=2),
            nn.Conv2d(self.c0, self.c0, 3, 1, 1, bias=False), nn.BatchNorm2d(self.c0), nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(self.c0, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False))

    def forward(self, z):
        x = self.net(self.fc(z).view(len(z), self.c0, self.s0, self.s0))
        return x[:, :, :self.size, :self.size]


def zero_shot(victim, student, dataset_info, cfg, device, seed, state_path=None, save_every=10, amp="auto"):
    """DFAD: `iterations` generator steps, each after `student_steps` student steps. Student: SGD with
    cosine decay; generator: Adam. Neither sees a real image.

    With `state_path`, the generator, student, both optimisers and schedules, the random state and the
    iteration are saved there every `save_every` iterations, and a run that finds the file resumes
    from it, with the same result as an uninterrupted run. The caller removes the file at the end."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    gen = Generator(cfg["z_dim"], dataset_info["channels"], dataset_info["size"], cfg.get("gen_width", 64)).to(device)
    student.to(device).train()
    victim.eval().requires_grad_(False)  # the generator's loss flows through the victim, not into it
    opt_s = torch.optim.SGD(student.parameters(), lr=cfg["lr_s"], momentum=0.9, weight_decay=5e-4)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg["lr_g"])
    total = cfg["iterations"]
    sched_s = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, total)
    sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, total)
    parts = dict(state_dict=student, generator=gen, opt_s=opt_s, opt_g=opt_g, sched_s=sched_s, sched_g=sched_g)
    first = 0
    if state_path and os.path.exists(state_path):
        st = load_checkpoint(state_path, "zero-shot state")
        for k, obj in parts.items():
            obj.load_state_dict(st[k])
        g.set_state(st["rng"])
        seeds.set_rng_state(st["global_rng"], device)  # dropout, where the student has it
        first = st["iteration"]
    bar = tqdm(range(first, total), total=total, initial=first, desc="zero-shot (DFAD)", leave=False,
               disable=not dd.is_main())
    for it in bar:
        gen.train()
        for _ in range(cfg["student_steps"]):
            z = torch.randn(cfg["batch"], cfg["z_dim"], generator=g).to(device)
            with torch.no_grad(), autocast(device, amp):
                x = gen(z)
                t = victim(x).float()
            with autocast(device, amp):
                loss_s = F.l1_loss(student(x).float(), t)
            opt_s.zero_grad(set_to_none=True)
            loss_s.backward()
            opt_s.step()
        z = torch.randn(cfg["batch"], cfg["z_dim"], generator=g).to(device)
        with autocast(device, amp):
            x = gen(z)
            loss_g = -F.l1_loss(student(x).float(), victim(x).float())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        sched_s.step()
        sched_g.step()
        bar.set_postfix(l1=f"{loss_s.item():.3f}")
        if state_path and dd.is_main() and (it + 1) % save_every == 0 and it + 1 < total:
            save_checkpoint(state_path, dict({k: obj.state_dict() for k, obj in parts.items()}, rng=g.get_state(),
                                             global_rng=seeds.rng_state(device), iteration=it + 1))
    victim.requires_grad_(True)
    student.eval()
    return student


def fine_tune_student(victim, student, data, dataset, cfg, device, seed, **kw):
    """Second stage of the multi-stage attack: fine-tune a stolen student on other data labelled by the victim."""
    return label_query(victim, student, data, dataset, cfg, device, seed, desc="multi-stage fine-tune", **kw)
