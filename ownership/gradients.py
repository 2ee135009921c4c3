"""Per-sample gradients of CE(model(x), y) and the reference's reduction rule.

The reduction rule [R], applied per parameter tensor in model.parameters() order, results concatenated:
  * 1-D tensors (biases, BatchNorm) are skipped;
  * 4-D conv weights (out, in, kh, kw): skipped if out*in > 5000, else max over the kernel
    positions -> out*in values;
  * 2-D weights (out, in): if out*in > 5000, max over the last dim -> out values, else all of it.
The meta-classifier sees the sign of the result.

Three implementations, all giving the same vectors:
  * `reduced_grads_loop`  the reference's batch-1 loop with torch.autograd.grad (slow, for tests);
  * `reduced_grads_vmap`  torch.func.vmap(grad(...)) over the whole parameter set;
  * `reduced_grads`       the engine: hooks keep each surviving layer's input, autograd gives its
                          output gradient, and one batched matmul gives every sample's weight gradient
                          with the reduction fused in. It only differentiates down to the earliest
                          layer that survives the rule.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

LIMIT = 5000


def reduction_plan(model):
    """[(name, shape, kind, out_dim)] for every parameter in order; kind in {skip, conv_max, full, row_max}."""
    plan = []
    for name, p in model.named_parameters():
        s = tuple(p.shape)
        if p.dim() == 4:
            kind = "skip" if s[0] * s[1] > LIMIT else "conv_max"
            dim = 0 if kind == "skip" else s[0] * s[1]
        elif p.dim() == 2:
            kind = "row_max" if s[0] * s[1] > LIMIT else "full"
            dim = s[0] if kind == "row_max" else s[0] * s[1]
        else:
            kind, dim = "skip", 0
        plan.append((name, s, kind, dim))
    return plan


def feature_dim(model):
    return sum(d for *_, d in reduction_plan(model))


def reduce_one(g, kind):
    """Reduce per-sample gradients g of shape (N, *param_shape) -> (N, k)."""
    n = g.shape[0]
    if kind == "conv_max":
        return g.flatten(3).amax(3).reshape(n, -1)
    if kind == "row_max":
        return g.amax(2)
    if kind == "full":
        return g.reshape(n, -1)
    return g.new_zeros(n, 0)


def reduced_grads_loop(model, x, y):
    """The reference: one image at a time, torch.autograd.grad, then the rule."""
    model.eval()
    plan = reduction_plan(model)
    params = list(model.parameters())
    rows = []
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([reduce_one(g.unsqueeze(0), k) for g, (_, _, k, _) in zip(grads, plan)], 1))
    return torch.cat(rows)


def reduced_grads_vmap(model, x, y):
    """torch.func.vmap(grad(loss)) over all parameters, then the rule."""
    from torch.func import functional_call, grad, vmap
    model.eval()
    plan = reduction_plan(model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([reduce_one(g[name], kind) for name, _, kind, _ in plan], 1)


class GradientEngine:
    """Per-sample reduced gradients for models whose surviving parameters are the weights of
    nn.Conv2d (groups=1) and nn.Linear modules, each called once per forward."""

    def __init__(self, model):
        self.model = model
        owner = {}
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and getattr(mod, "weight", None) is not None:
                owner[id(mod.weight)] = mod
        self.layers = []  # (module, kind) in parameter order, kept ones only
        self.dim = 0
        for (name, shape, kind, dim), p in zip(reduction_plan(model), model.parameters()):
            if kind == "skip":
                continue
            mod = owner.get(id(p))
            if mod is None or (isinstance(mod, nn.Conv2d) and mod.groups != 1):
                raise TypeError(f"parameter {name} is not the weight of a plain Conv2d/Linear; "
                                f"use reduced_grads_vmap")
            self.layers.append((mod, kind))
            self.dim += dim

    def __call__(self, x, y):
        model = self.model
        model.eval()
        inputs, outputs, handles = {}, {}, []

        def hook(mod, inp, out):
            if mod in inputs:
                raise RuntimeError("a kept layer ran twice in one forward; use reduced_grads_vmap")
            inputs[mod] = inp[0].detach()
            outputs[mod] = out

        for mod, _ in self.layers:
            handles.append(mod.register_forward_hook(hook))
        try:
            with torch.enable_grad():
                logits = model(x)
                loss = F.cross_entropy(logits, y, reduction="sum")  # sum: row n holds d loss_n
                mods = [m for m, _ in self.layers]
                gouts = torch.autograd.grad(loss, [outputs[m] for m in mods])
        finally:
            for h in handles:
                h.remove()
        feats = []
        for (mod, kind), go in zip(self.layers, gouts):
            a = inputs[mod]
            n = a.shape[0]
            go = go.detach()
            if isinstance(mod, nn.Linear):
                a, go = a.reshape(n, -1, a.shape[-1]), go.reshape(n, -1, go.shape[-1])
                if a.shape[1] == 1:
                    a, go = a[:, 0], go[:, 0]
                    if kind == "row_max":  # max_j go_o * a_j, without forming the outer product
                        feats.append(torch.where(go >= 0, go * a.amax(1, keepdim=True),
                                                 go * a.amin(1, keepdim=True)))
                    else:
                        feats.append((go[:, :, None] * a[:, None, :]).reshape(n, -1))
                    continue
                g = torch.bmm(go.transpose(1, 2), a)  # (n, out, in), sequence dims summed
                feats.append(reduce_one(g, kind))
            else:
                cols = F.unfold(a, mod.kernel_size, mod.dilation, mod.padding, mod.stride)  # (n, in*k, P)
                g = torch.bmm(go.flatten(2), cols.transpose(1, 2))  # (n, out, in*k)
                o, i = mod.out_channels, mod.in_channels
                feats.append(g.view(n, o, i, -1).amax(3).reshape(n, o * i))
        return torch.cat(feats, 1)


def reduced_grads(model, x, y):
    """Batched per-sample reduced gradients with the fastest method that applies to `model`."""
    try:
        return GradientEngine(model)(x, y)
    except TypeError:
        return reduced_grads_vmap(model, x, y)


def gradient_signs(model, images, dataset, device, batch_size=128, augment=True, seed=0, out=None,
                   desc="gradients"):
    """Sign vectors (int8, N x d) of `model` on ImageSet `images`, streamed in batches.

    `augment` applies the training transform (as the reference did), drawn from `seed`, so two models
    see the same augmented images. `out` may be a writable array (e.g. a np.memmap) to stream into.
    """
    from .data import augment as aug, normalise
    model.eval()
    try:
        engine = GradientEngine(model)
        fn = engine.__call__
    except TypeError:
        fn = lambda xb, yb: reduced_grads_vmap(model, xb, yb)  # noqa: E731
    d = feature_dim(model)
    n = len(images)
    if out is None:
        out = np.empty((n, d), dtype=np.int8)
    gen = torch.Generator().manual_seed(seed)
    for start in tqdm(range(0, n, batch_size), desc=desc, leave=False, unit="batch"):
        sl = slice(start, min(n, start + batch_size))
        xb = normalise(images.x[sl], dataset, device)
        if augment:
            xb = aug(xb, dataset, gen)
        g = fn(xb, images.y[sl].to(device))
        if not torch.isfinite(g).all():
            from .cli import UserError
            raise UserError("NaN or Inf in the model's gradients; the checkpoint is broken or diverged")
        out[sl] = torch.sign(g).to(torch.int8).cpu().numpy()
    return out


def collect(model_path, dataset, data_dir, grad_dir, gamma=0.1, split="train", arch=None, num_classes=None,
            device="cpu", batch_size=128, augment=True, seed=0, out_path=None):
    """Sign vectors of checkpoint `model_path` on the transformed set, written (atomically, streamed
    through a memory map) to gradients_set/<model file>/<data folder>/g_f.npy. Returns the path."""
    import json
    import os

    from . import paths
    from .checkpoints import atomic_write, load_model
    from .data import load_styled
    from .presets import DATASETS

    d = DATASETS[dataset]
    model, ck = load_model(model_path, arch, num_classes or d["num_classes"], d["channels"], device,
                           made_by="python reproduce.py (or train_model.py / steal.py)")
    images = load_styled(data_dir, dataset, gamma, split)
    out_path = out_path or paths.gradient_set(grad_dir, model_path, paths.styled_dir(data_dir, dataset, gamma), split)

    def write(tmp):
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int8, shape=(len(images), feature_dim(model)))
        gradient_signs(model, images, dataset, device, batch_size, augment, seed, out=arr,
                       desc=f"gradients {os.path.basename(model_path)}")
        arr.flush()
        del arr

    atomic_write(out_path, write)
    meta = dict(model=os.path.abspath(model_path), arch=ck.get("arch", arch), dataset=dataset, split=split,
                n=len(images), dim=feature_dim(model), augment=augment, seed=seed)
    atomic_write(os.path.join(os.path.dirname(out_path), "meta.json"),
                 lambda tmp: open(tmp, "w").write(json.dumps(meta, indent=1)))
    return out_path


def load_set(path, made_by=None):
    """A gradient set g_f.npy, memory-mapped."""
    import os
    from .cli import UserError
    if not os.path.exists(path):
        raise UserError(f"gradient set {path} does not exist; make it with '{made_by or 'python gradientset.py --m <model>'}'")
    try:
        return np.load(path, mmap_mode="r")
    except Exception as e:
        raise UserError(f"gradient set {path} is corrupt ({e.__class__.__name__}); delete it and rerun "
                        f"'{made_by or 'python gradientset.py'}'") from None
