"""Per-sample gradients of CE(model(x), y), and the other white-box features (constants.WHITE_BOX).

weight-signs (the paper): the signs of the gradients w.r.t. the weights, reduced by the reference's
rule below. input-gradient (ours): the gradient w.r.t. the input image (`input_gradients`), which does
not depend on how a model orders its neurons. stylised-loss (ours, the fmnist default): the log-loss
on the stylised image alone (`stylised_loss_features`), no gradient at all. `white_box_features`
streams any of them over a set.

The reduction rule [R], applied per parameter tensor in model.parameters() order, results concatenated:
  * 1-D tensors (biases, BatchNorm) are skipped;
  * 4-D conv weights (out, in, kh, kw): skipped if out*in > 5000, else max over the kernel
    positions -> out*in values;
  * 2-D weights (out, in): if out*in > 5000, max over the last dim -> out values, else all of it.
The meta-classifier sees the sign of the result.

Three implementations, all giving the same vectors (to float rounding: in float64 their signs agree
exactly; in float32 a batched forward rounds differently from a batch-1 one, a ReLU input within
rounding of 0 may then switch, and a reduced value near 0 may change sign: a few per million on
WRN-16-1, several per 10,000 on WRN-28-10, about as often as the float32 loop differs from float64):
  * `reduced_grads_loop`  the reference's batch-1 loop with torch.autograd.grad (slow, for tests);
  * `reduced_grads_vmap`  torch.func.vmap(grad(...)) over the whole parameter set;
  * `reduced_grads_fn`    the engine (GradientEngine): one batched forward (channels-last on CPU) with
                          hooks that keep each surviving layer's input and output; one autograd.grad
                          to those outputs only, so backpropagation stops at the earliest surviving
                          layer and computes no parameter gradient; then each sample's weight
                          gradient from (input, output gradient), reduced as it is formed, by one of
                          CONV_METHODS per convolution. docs/BENCHMARKS.md has the measurements.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from tqdm import tqdm

from .data import ImageSet, augment as aug, augment_draws, normalise
from .constants import WHITE_BOX
from .errors import UserError
from .features import FEATURES
from .presets import DATASETS

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
    model.eval()
    plan = reduction_plan(model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([reduce_one(g[name], kind) for name, _, kind, _ in plan], 1)


def _conv_input(mod, a):
    """The input as the convolution sees it, and the zero padding still to apply: other padding
    modes and padding='same' are applied here."""
    if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
        mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
        return F.pad(a, mod._reversed_padding_repeated_twice, mode=mode), (0, 0)
    return a, tuple(mod.padding)


def _nhwc_padded(a, pad):
    """Input (n, I, H, W), any memory format -> zero-padded (n, Hp, Wp, I), contiguous."""
    an = a.permute(0, 2, 3, 1)
    ph, pw = pad
    if not (ph or pw):
        return an.contiguous()
    n, h, w, i = an.shape
    out = an.new_zeros((n, h + 2 * ph, w + 2 * pw, i))
    out[:, ph:ph + h, pw:pw + w] = an
    return out


def _conv_unfold(mod, a, go, pad):
    """im2col in channels-last order (a strided view of the padded input, copied once) and one
    batched matmul: (n, O, P) x (n, P, K*I) -> max over the K kernel positions."""
    ap = _nhwc_padded(a, pad)
    n, _, _, i = ap.shape
    o, ho, wo = go.shape[1:]
    (sh, sw), (dh, dw), (kh, kw) = mod.stride, mod.dilation, mod.kernel_size
    sn, sy, sx, _ = ap.stride()
    cols = ap.as_strided((n, ho, wo, kh, kw, i), (sn, sh * sy, sw * sx, dh * sy, dw * sx, 1))
    cols = cols.reshape(n, ho * wo, kh * kw * i)
    g = torch.bmm(go.permute(0, 2, 3, 1).reshape(n, ho * wo, o).transpose(1, 2), cols)
    return g.view(n, o, kh * kw, i).amax(2)


def _conv_grouped(mod, a, go, pad):
    """The convolution's own weight-gradient kernel, with the batch folded into groups: group s of a
    convolution with n groups sees only sample s, so its weight gradient is sample s's gradient."""
    n, i, h, w = a.shape
    o = go.shape[1]
    weight = a.new_empty((n * o, i) + tuple(mod.kernel_size))  # only its shape is used
    _, g, _ = torch.ops.aten.convolution_backward(
        go.reshape(1, n * o, *go.shape[2:]), a.reshape(1, n * i, h, w), weight, None, list(mod.stride),
        list(pad), list(mod.dilation), False, [0, 0], n, [False, True, False])
    return g.view(n, o, i, -1).amax(3)


def _conv_shifted(mod, a, go, pad):
    """One batched matmul per kernel position, no im2col copy, the max taken as it goes.

    The padded channels-last input is split into stride phases; within a phase every kernel
    position is a row shift of the flattened phase image (n, Hph*Wph, I), so its gradient is
    go^T (n, O, Ho*Wph) times a window of those rows, where go is embedded into the phase width Wph
    with zero columns (which meet only finite inputs, so they add exact zeros)."""
    ap = _nhwc_padded(a, pad)
    n, _, _, i = ap.shape
    o, ho, wo = go.shape[1:]
    (sh, sw), (dh, dw), (kh, kw) = mod.stride, mod.dilation, mod.kernel_size
    gon = go.permute(0, 2, 3, 1)  # (n, Ho, Wo, O)
    phases = {}
    for ky in range(kh):
        for kx in range(kw):
            phases.setdefault(((ky * dh) % sh, (kx * dw) % sw), []).append(((ky * dh) // sh, (kx * dw) // sw))
    res = None
    for (py, px), shifts in phases.items():
        t = ap[:, py::sh, px::sw]
        hp, wp = t.shape[1:3]
        extra = max(sx for _, sx in shifts)  # the zero columns of go read this far past the end
        flat = t.reshape(n, hp * wp, i)
        flat = F.pad(flat, (0, 0, 0, extra)) if extra else flat
        gw = (F.pad(gon, (0, 0, 0, wp - wo)) if wp != wo else gon).reshape(n, ho * wp, o).transpose(1, 2)
        q = ho * wp
        for sy, sx in shifts:
            off = sy * wp + sx
            g = torch.bmm(gw, flat[:, off:off + q])
            res = g if res is None else torch.maximum(res, g, out=res)
    return res


CONV_METHODS = {"unfold": _conv_unfold, "grouped": _conv_grouped, "shifted": _conv_shifted}


def _auto_method(mod, a, go):
    """A fixed rule (so results do not depend on timings), from per-layer measurements on a 2-core
    CPU with channels-last activations (docs/BENCHMARKS.md): per-position matmuls for 1x1 kernels
    and for many channels on small maps; im2col for few input channels, many more outputs than
    inputs, or strided kernels; otherwise the convolution's grouped weight-gradient kernel.
    im2col on accelerators."""
    if a.device.type != "cpu":
        return "unfold"
    i, o = a.shape[1], go.shape[1]
    if mod.kernel_size[0] * mod.kernel_size[1] == 1:
        return "shifted"
    if i <= 4 or o >= 4 * i or mod.stride[0] * mod.stride[1] > 1:
        return "unfold"
    if i * o >= 2048 and go.shape[2] * go.shape[3] <= 144:
        return "shifted"
    return "grouped"


def _to_channels_last(x):
    """x in channels-last memory with explicit strides: x.contiguous(memory_format=channels_last)
    leaves a 1-channel batch as it is, and the convolutions would then stay channels-first."""
    n, c, h, w = x.shape
    out = torch.empty_strided(x.shape, (c * h * w, 1, w * c, c), dtype=x.dtype, device=x.device)
    return out.copy_(x)


class GradientEngine:
    """Per-sample reduced gradients for models whose surviving parameters are the weights of
    nn.Conv2d (groups=1) and nn.Linear modules, each called once per forward.

    One batched forward with hooks keeps each surviving layer's input and output; one
    torch.autograd.grad gives the loss gradient at those outputs only, so the backward pass stops at
    the earliest surviving layer and computes no parameter gradient. Each sample's weight gradient
    is then formed from (input, output gradient) with the reduction fused in. `conv_method` picks how
    (see CONV_METHODS; "auto" chooses per layer, deterministically). `channels_last` runs the
    forward in that memory format (default: on CPU, where oneDNN is faster with it)."""

    def __init__(self, model, conv_method="auto", channels_last=None):
        if conv_method != "auto" and conv_method not in CONV_METHODS:
            raise ValueError(f"conv_method must be auto or one of {', '.join(CONV_METHODS)}")
        self.model = model
        self.conv_method = conv_method
        self.channels_last = channels_last
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
        """Reduced per-sample gradients (N, dim), in the model's dtype even inside an autocast region:
        bf16 would flip the sign of small reduced values, and the sign is all the meta-classifier sees."""
        with torch.autocast(x.device.type, enabled=False):
            return self._compute(x, y)

    def _compute(self, x, y):
        model = self.model
        model.eval()
        inputs, outputs, handles = {}, {}, []

        def hook(mod, inp, out):
            if mod in inputs:
                raise RuntimeError("a kept layer ran twice in one forward; use reduced_grads_vmap")
            inputs[mod] = inp[0].detach()
            outputs[mod] = out

        cl = self.channels_last if self.channels_last is not None else x.device.type == "cpu"
        if cl and x.dim() == 4:
            x = _to_channels_last(x)
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
        outputs.clear()  # free the graph before the per-layer products
        del logits, loss
        feats = []
        for (mod, kind), go in zip(self.layers, gouts):
            feats.append(self._layer(mod, kind, inputs.pop(mod), go.detach()))
        del gouts
        return torch.cat(feats, 1)

    def _layer(self, mod, kind, a, go):
        n = a.shape[0]
        if isinstance(mod, nn.Linear):
            a, go = a.reshape(n, -1, a.shape[-1]), go.reshape(n, -1, go.shape[-1])
            if a.shape[1] == 1:
                a, go = a[:, 0], go[:, 0]
                if kind == "row_max":  # max_j go_o * a_j, without forming the outer product
                    return torch.where(go >= 0, go * a.amax(1, keepdim=True), go * a.amin(1, keepdim=True))
                return (go[:, :, None] * a[:, None, :]).reshape(n, -1)
            g = torch.bmm(go.transpose(1, 2), a)  # (n, out, in), sequence dims summed
            return reduce_one(g, kind)
        a, pad = _conv_input(mod, a)
        method = self.conv_method if self.conv_method != "auto" else _auto_method(mod, a, go)
        return CONV_METHODS[method](mod, a, go, pad).reshape(n, -1)


def reduced_grads_fn(model):
    """f(x, y) -> batched per-sample reduced gradients (N, feature_dim) of `model`, by the fastest method
    that applies: the GradientEngine, else reduced_grads_vmap (the one place that falls back)."""
    try:
        return GradientEngine(model)
    except TypeError:
        return lambda x, y: reduced_grads_vmap(model, x, y)


AUG_BLOCK = 128  # images per draw of the training transform (the default batch size, as before)


def _blocks(images, dataset, device, dtype, augment, seed, start=0, stop=None):
    """(x, y) of images[start:stop] normalised and, with `augment`, transformed, in blocks of AUG_BLOCK
    drawn in order from one generator seeded with `seed`: the draws do not depend on any batch size.
    The blocks before `start` (a multiple of AUG_BLOCK) are drawn but not made, so a shard of the set
    gets the transform that the whole set gets."""
    stop = len(images) if stop is None else stop
    if start >= stop:  # an empty shard
        return
    if start % AUG_BLOCK or (stop != len(images) and stop % AUG_BLOCK):
        raise ValueError(f"rows {start}:{stop} are not whole blocks of {AUG_BLOCK} images")
    gen = torch.Generator().manual_seed(seed)
    for b in range(0, stop, AUG_BLOCK):
        sl = slice(b, min(stop, b + AUG_BLOCK))
        if b < start:
            if augment:
                augment_draws(sl.stop - sl.start, dataset, gen)
            continue
        xb = normalise(images.x[sl], dataset, device)
        if augment:
            xb = aug(xb, dataset, gen)
        yield xb.to(dtype), images.y[sl].to(device)


def _rechunk(blocks, size):
    """Re-cut a stream of blocks, tuples of tensors with rows in step ((x, y) or (x, y, x_clean)), into
    batches of `size` rows (the last one may be smaller)."""
    parts, have = [], 0
    for block in blocks:
        parts.append(block)
        have += len(block[0])
        while have >= size:
            cat = tuple(p[0] if len(parts) == 1 else torch.cat(p) for p in zip(*parts))
            yield tuple(t[:size] for t in cat)
            parts, have = ([tuple(t[size:] for t in cat)], have - size) if have > size else ([], 0)
    if have:
        yield tuple(p[0] if len(parts) == 1 else torch.cat(p) for p in zip(*parts))


def input_gradients(model, x, y):
    """Per-sample gradients of CE(model(x_i), y_i) w.r.t. the input image x_i, (N, C*H*W), and the
    losses CE_i themselves, (N,), both in the model's dtype, autocast off, from one forward. One
    backward of the summed loss: in eval mode (BatchNorm on running statistics) sample i's loss depends
    on x_i alone, so row i is exactly its own gradient."""
    model.eval()
    with torch.autocast(x.device.type, enabled=False), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), x)
    return g.flatten(1), loss.detach()


LOSS_FLOOR = 1e-12  # log-loss features: log(max(CE, LOSS_FLOOR)), so a loss that rounds to 0 stays finite


def input_gradient_features(model, x, y, x_clean):
    """The "input-gradient" white-box features of stylised images x (N, C, H, W) with labels y and
    their clean originals x_clean: (N, C*H*W + 2), the input gradient of CE at x (input_gradients),
    then log CE at x and log CE at x_clean. The two losses say how far the model is from the label on
    the stylised image and on the same image without the style, so a model that is merely less sure
    everywhere (under-trained) is told from one that learnt the style; with them no independent model
    of seeds 20-22 was flagged, without them one (docs/VALIDITY.md, "White-box features")."""
    g, loss = input_gradients(model, x, y)
    return torch.cat([g, _log_loss(loss), stylised_loss_features(model, x_clean, y)], 1)


def _log_loss(loss):
    """(N,) losses -> (N, 1) log-loss features, floored at LOSS_FLOOR."""
    return loss.clamp_min(LOSS_FLOOR).log()[:, None]


def stylised_loss_features(model, x, y):
    """The "stylised-loss" white-box features of stylised images x (N, C, H, W) with labels y: (N, 1),
    log CE(model(x_i), y_i) (floored at LOSS_FLOOR), in the model's dtype, autocast off, eval mode.
    One number per image that, like the input gradient, does not depend on how the model orders its
    neurons. On seeds 20-22 it detected distillation and multi-stage as often as the input-gradient
    features, flagged no independent model and no weak zero-shot student, and had the smallest
    reference spread (docs/VALIDITY.md, "White-box features"), so the direction of the input gradient
    adds nothing measurable there. It needs the model's output only, not its weights."""
    model.eval()
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        return _log_loss(F.cross_entropy(model(x), y, reduction="none"))


def white_box_dim(model, feature, dataset):
    """Length of a model's white-box feature vector (constants.WHITE_BOX): the reduced weight-gradient
    dimension, the image size C*H*W plus the two log-losses, or 1 (the stylised image's log-loss)."""
    if feature == "weight-signs":
        return feature_dim(model)
    if feature == "stylised-loss":
        return 1
    d = DATASETS[dataset]
    return d["channels"] * d["size"] * d["size"] + 2


def white_box_features(model, images, dataset, device, feature="weight-signs", batch_size=128, augment=True, seed=0,
                       out=None, desc="gradients", rows=None, progress=True, originals=None):
    """White-box feature vectors of `model` on ImageSet `images`, streamed in batches: int8 signs of the
    reduced weight gradients (N x feature_dim) for "weight-signs", float32 input_gradient_features
    (N x C*H*W + 2) for "input-gradient", which needs `originals`, the clean images (uint8,
    N x C x H x W, images' order) that the stylised ones were made from, or float32
    stylised_loss_features (N x 1) for "stylised-loss" (constants.WHITE_BOX).

    `augment` applies the training transform to the stylised images (as the reference did; never to
    the originals), drawn from `seed` in fixed blocks of AUG_BLOCK images, so two models see the same
    augmented images whatever their batch sizes. `out` may be a writable array (e.g. a np.memmap) to
    stream into. `rows` (a slice of whole blocks, see gradient_sets.shard_rows) computes only those
    images' rows, as they are in the whole set; `progress` shows a progress bar. Images are cast to the
    model's floating dtype (a float64 model gets float64 inputs) and autocast is off: the features are
    those of float32 (float64) computations even if the caller runs under bf16 autocast. Raises UserError
    for NaN or Inf features, ValueError for an unknown feature or missing originals."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if feature not in WHITE_BOX:
        raise ValueError(f"feature must be one of {WHITE_BOX}, got {feature!r}")
    model.eval()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    rows = rows or slice(0, len(images))
    blocks = _blocks(images, dataset, device, dtype, augment, seed, rows.start, rows.stop)
    if FEATURES[feature].originals:
        if originals is None or len(originals) != len(images):
            raise ValueError("the input-gradient features need the stylised images' clean originals, one per image")
        clean = _blocks(ImageSet(originals, images.y, images.classes), dataset, device, dtype, False, seed,
                        rows.start, rows.stop)
        blocks = ((x, y, xc) for (x, y), (xc, _) in zip(blocks, clean))
        fn = lambda x, y, xc: input_gradient_features(model, x, y, xc)  # noqa: E731
    elif feature == "stylised-loss":
        fn = lambda x, y: stylised_loss_features(model, x, y)  # noqa: E731
    else:
        fn = reduced_grads_fn(model)
    kind = np.dtype(FEATURES[feature].dtype).type
    n = rows.stop - rows.start
    if out is None:
        out = np.empty((n, white_box_dim(model, feature, dataset)), dtype=kind)
    start = 0
    with torch.autocast(torch.device(device).type, enabled=False):
        for batch in tqdm(_rechunk(blocks, batch_size), total=-(-n // batch_size), desc=desc, leave=False,
                          unit="batch", disable=not progress):
            g = fn(*batch)
            if not torch.isfinite(g).all():
                raise UserError(f"NaN or Inf in the model's white-box features ({desc}); its weights overflow: the "
                                f"checkpoint is broken or diverged")
            out[start:start + len(g)] = (torch.sign(g).to(torch.int8) if kind is np.int8 else g.float()).cpu().numpy()
            start += len(g)
    return out
