"""Dataset Inference (Maini, Yaghini, Papernot, ICLR 2021), a second witness next to MOVE.

DI asks whether a suspect's decision boundary sits farther from the victim's private training images
than from images of the same distribution that nobody trained on. Its code is
github.com/cleverhans-lab/dataset-inference (commit 24baf46; [DIc] below); how it runs and where it fails:
/work/shared/DATASET_INFERENCE.md, and docs/DATASET_INFERENCE.md for this module.

    sets = di_sets(preset, data_dir, seed)                       # private/public, fit/test, disjoint
    di = DatasetInference(victim_model, sets, "fmnist")          # victim's features -> the regressor
    r = di(suspect_model)          # or di(label_oracle): a callable, images in [0, 1] -> top-1 labels
    r["p_value"], r["delta_mu"], r["queries"], r["verdict"]
    combined_verdict(p_move, r["p_value"])                       # stolen when either rejects at alpha/2

Features, one row per image (len(norms) x 10 numbers; 30 for the three norms):
  blind-walk  black-box, top-1 labels only [DIc attacks.py rand_steps]: per image and norm, 10 random
              directions d (l_inf: uniform +-0.005 per pixel; l2: Gaussian sd 0.005; l1: Laplace scale
              0.01; times the data set's walk_scale), labels of clip(x + j d, 0, 1) for j = 1, 2, ...
              up to `steps` = 50; the walk stops at the first j whose label differs from the true label;
              feature = ||clip(x + j d) - x||_p. A walk that never leaves the label keeps j = steps + 1,
              as the DI loop leaves it.
  mingd       white-box [DIc attacks.py mingd]: per image, norm and target class t = 0..K-1, fixed steps
              on delta (l_inf 0.001 sign(g); l2 0.01 g / ||g||; l1 0.01 on the 100 largest |g|) until
              the argmax is t, at most 500 steps; feature = ||delta||_p, sorted over the targets [DIc
              notebooks cell 9]. The true class of a correctly classified image gives 0.
The perturbation lives in pixel space [0, 1]; the dataset's normalisation is inside the wrapped model
(PixelModel). The DI notebooks flatten the (images, 10, 3) features with a transpose and a reshape that
puts 30 different images into one row; here a row is one image.

The test: the confidence regressor (30 -> 100 -> ReLU -> 1 -> tanh, loss -mean((2y - 1) out), SGD lr 0.1,
1000 full-batch steps [DIc notebooks cells 10-12]) is fitted on the victim alone, its private fit images
labelled 0 and public fit images 1; features z-scored per norm with the victim's private fit mean and std.
Per suspect, the regressor scores the test images (disjoint from the fit images) and a one-sided Welch
t-test asks whether the public scores exceed the private ones. DI reports the harmonic mean of the
p-values of 100 overlapping random draws of m images; that number is not a p-value (its draws share
images, and a harmonic mean of dependent p-values is not uniform under H0), so the verdict here is ONE
test on the first m images per side, and the detection rate over the disjoint blocks of m images
estimates how often one such test would reject (the test images are in a seeded random order).
"""
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from . import stats
from .constants import ALPHA, DI_FEATURES, DI_NORMS
from .data import load_dataset, load_styled, split_indices
from .errors import UserError
from .presets import DATASETS, DI


# ----------------------------------------------------------------------------- models and oracles
class PixelModel(torch.nn.Module):
    """`model` (which takes normalised images) as a model of pixels: x (N, C, H, W) in [0, 1] -> logits
    (N, K); the dataset's mean/std normalisation happens inside."""

    def __init__(self, model, dataset):
        super().__init__()
        d = DATASETS[dataset]
        self.model = model
        self.register_buffer("mean", torch.tensor(d["mean"]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(d["std"]).view(1, -1, 1, 1))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


class ModelOracle:
    """The label oracle of a local torch model: images (N, C, H, W) float in [0, 1] -> top-1 labels (N,)
    int64 on the CPU, in batches of `batch_size`, in eval mode, fp32."""

    def __init__(self, model, dataset, device="cpu", batch_size=1024):
        self.net = PixelModel(model, dataset).to(device).eval()
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, x):
        out = [self.net(x[i:i + self.batch_size].to(self.device)).argmax(1).cpu()
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


class CountingOracle:
    """Any label oracle (a callable: images (N, C, H, W) float in [0, 1] -> N top-1 labels as a tensor,
    array or list of ints), its answers checked and its queries counted (`queries`: images asked).
    Raises UserError naming `name` when it answers another number of labels than images asked, or
    labels that are not integers in 0..num_classes-1."""

    def __init__(self, oracle, num_classes, name="suspect"):
        self.oracle, self.num_classes, self.name, self.queries = oracle, num_classes, name, 0

    def __call__(self, x):
        n = len(x)
        labels = torch.as_tensor(np.asarray(self.oracle(x)))
        self.queries += n
        if labels.dim() != 1 or len(labels) != n:
            got = len(labels) if labels.dim() == 1 else f"an array of shape {tuple(labels.shape)} of"
            raise UserError(f"{self.name} answered {got} labels for {n} images; a label oracle must answer one "
                            f"top-1 label per image asked (check that it answers every query)")
        if labels.dtype in (torch.bool,) or labels.is_floating_point() or labels.is_complex():
            raise UserError(f"{self.name} answered {labels.dtype} labels; it must answer integer class indices")
        if n and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserError(f"{self.name} answered label {int(labels.max() if labels.max() >= 0 else labels.min())}, "
                            f"outside 0..{self.num_classes - 1}; it must answer class indices of this dataset")
        return labels.long().cpu()


def check_not_constant(labels, y, name):
    """UserError when `labels` (N,) are one label for images `y` (N,) of several classes: a constant
    model has no decision boundary to measure, so DI can say nothing about it."""
    if len(labels) > 1 and len(torch.unique(labels)) == 1 and len(torch.unique(y)) > 1:
        raise UserError(f"{name} gives the same label ({int(labels[0])}) to all {len(labels)} clean images of "
                        f"{len(torch.unique(y))} classes: it has no decision boundary for Dataset Inference to "
                        f"measure; check that it is a trained model of this dataset")


def pixels(images):
    """ImageSet (uint8) -> float (N, C, H, W) in [0, 1]."""
    return images.x.float().div(255)


# ----------------------------------------------------------------------------- Blind Walk
def _norm(delta, norm):
    """Per-image l_p norm of delta (N, ...) -> (N,); norm one of constants.DI_NORMS."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    return flat.norm(p={"l2": 2, "l1": 1}[norm], dim=1)


def walk_directions(n, shape, norm, size, generator):
    """n random directions (n, *shape) of DI's Blind Walk [DIc rand_steps]: l_inf uniform in
    [-size, size] per pixel, l2 Gaussian with sd `size`, l1 Laplace with scale `size`."""
    u = torch.rand((n, *shape), generator=generator)
    if norm == "linf":
        return (2 * u - 1) * size
    if norm == "l2":
        return torch.randn((n, *shape), generator=generator) * size
    v = u - 0.5  # Laplace by the inverse CDF
    return -size * torch.sign(v) * torch.log((1 - 2 * v.abs()).clamp_min(1e-12))


def walk_stops(oracle, x, y, directions, steps, progress=None):
    """Walk each image along its direction: the first j in 1..steps with oracle(clip(x + j d, 0, 1)) != y.
    x, directions (N, C, H, W); y (N,). Returns (stops (N,) int64, j = steps + 1 for a walk that never
    left y; queries (N,) int64, labels asked per walk = min(stop, steps)). Only walks still on y are
    queried at the next j [DIc rand_steps]."""
    n = len(x)
    stops = torch.full((n,), steps + 1, dtype=torch.long)
    queries = torch.zeros(n, dtype=torch.long)
    active = torch.arange(n)
    for j in range(1, steps + 1):
        if not len(active):
            break
        labels = oracle((x[active] + j * directions[active]).clamp(0, 1))
        queries[active] += 1
        left = labels != y[active]
        stops[active[left]] = j
        active = active[~left]
        if progress is not None:
            progress.update(1)
    return stops, queries


def blind_walk(oracle, x, y, *, norms=DI_NORMS, scale=1.0, walk=None, seed=0, desc="blind walk"):
    """Blind Walk features [DIc attacks.py rand_steps, generate_features.py get_random_label_only].

    oracle: label oracle (images (N, C, H, W) float in [0, 1] -> N top-1 labels), e.g. ModelOracle or
    a CountingOracle around an API; x (N, C, H, W) float in [0, 1]; y (N,) true labels. `walk`: the
    directions, steps and per-norm sizes (default presets.DI["walk"]), the sizes times `scale`. The
    directions depend on `seed` only, so every suspect walks the same ones. Returns dict(features
    (N, len(norms), directions) float: the l_p norm of the clipped step where the label left y; stops
    (N, len(norms), directions) int64: that j (steps + 1: never); queries (N,) int64: labels asked per
    image, the clean check included; clean (N,) the labels of the clean images). Raises UserError
    (check_not_constant) when the clean images all get one label."""
    walk = dict(DI["walk"], **(walk or {}))
    r, steps = walk["directions"], walk["steps"]
    clean = torch.as_tensor(oracle(x))
    check_not_constant(clean, y, getattr(oracle, "name", "the suspect"))
    n = len(x)
    xr, yr = x.repeat_interleave(r, 0), y.repeat_interleave(r, 0)
    feats = torch.zeros(n, len(norms), r)
    stops = torch.zeros(n, len(norms), r, dtype=torch.long)
    queries = torch.ones(n, dtype=torch.long)  # the clean check
    with tqdm(total=len(norms) * steps, desc=desc, leave=False) as bar:
        for i, norm in enumerate(norms):
            g = torch.Generator().manual_seed(seed * 1000 + DI_NORMS.index(norm))
            d = walk_directions(n * r, x.shape[1:], norm, walk[norm] * scale, g)
            j, q = walk_stops(oracle, xr, yr, d, steps, bar)
            delta = (xr + j.view(-1, 1, 1, 1) * d).clamp(0, 1) - xr
            feats[:, i] = _norm(delta, norm).view(n, r)
            stops[:, i] = j.view(n, r)
            queries += q.view(n, r).sum(1)
            bar.update((i + 1) * steps - bar.n)  # a norm whose walks all stopped early
    return dict(features=feats, stops=stops, queries=queries, clean=clean)


# ----------------------------------------------------------------------------- MinGD
def _l1_direction(g, x_cur, gap, k):
    """DI's l1 step direction [DIc attacks.py l1_dir_topk]: sign(g) on the k largest |g|, leaving out
    pixels on the box and pixels within `gap` of it that g would push out."""
    blocked = ((g < 0) & (x_cur <= gap)) | ((g > 0) & (x_cur >= 1 - gap)) | (x_cur <= 0) | (x_cur >= 1)
    flat = g.masked_fill(blocked, 0).flatten(1)
    kval = flat.abs().topk(min(k, flat.shape[1]), dim=1).values[:, -1:]
    return ((flat.abs() >= kval).float() * flat.sign()).view_as(g)


def mingd_delta(net, x, target, norm, params=None):
    """DI's MinGD [DIc attacks.py mingd]: per row, fixed steps on delta that raise (logit_target - max
    logit) until net's argmax is `target`, at most params["iters"] steps, x + delta kept in [0, 1].
    net: images in [0, 1] -> logits (PixelModel); x (N, C, H, W); target (N,) int64. Returns (delta
    (N, C, H, W), steps (N,) int64: gradient steps taken per row)."""
    p = dict(DI["mingd"], **(params or {}))
    delta = torch.zeros_like(x)
    steps = torch.zeros(len(x), dtype=torch.long)
    active = torch.arange(len(x), device=x.device)
    for _ in range(p["iters"]):
        xa, da = x[active], delta[active].requires_grad_(True)
        logits = net(xa + da)
        left = logits.argmax(1) != target[active]
        if not left.any():
            break
        loss = (logits.gather(1, target[active, None]).squeeze(1) - logits.max(1).values)[left].sum()
        g, = torch.autograd.grad(loss, da)
        g, xa, da, active = g[left], xa[left], da.detach()[left], active[left]
        if norm == "linf":
            da = da + p["linf"] * g.sign()
        elif norm == "l2":
            da = da + p["l2"] * g / (g + 1e-12).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        else:
            da = da + p["l1"] / p["k"] * _l1_direction(g, xa + da, p["gap"], p["k"])
        delta[active] = (xa + da).clamp(0, 1) - xa
        steps[active.cpu()] += 1
    return delta, steps


def mingd(model, x, y, dataset, *, norms=DI_NORMS, params=None, device="cpu", batch_size=256, desc="mingd"):
    """MinGD features [DIc generate_features.py get_mingd_vulnerability] of a local model (white-box).
    model: takes normalised images (wrapped here in PixelModel); x (N, C, H, W) float in [0, 1]; y (N,).
    Returns dict(features (N, len(norms), K) float: ||delta||_p per target class 0..K-1, unsorted;
    steps (N,) int64: gradient steps per image; forwards (N,) int64: forward passes per image, i.e.
    steps plus the final check of each row and the clean check; clean (N,) the clean labels). Raises UserError
    (check_not_constant) when the clean images all get one label."""
    net = PixelModel(model, dataset).to(device).eval()
    k = DATASETS[dataset]["num_classes"]
    with torch.no_grad():
        width = net(x[:1].to(device)).shape[1]
    if width != k:
        raise UserError(f"the suspect answers {width} classes, the {dataset} dataset has {k}; give a model of it")
    clean = ModelOracle(model, dataset, device)(x)
    check_not_constant(clean, y, "the suspect")
    n = len(x)
    feats = torch.zeros(n, len(norms), k)
    steps = torch.zeros(n, dtype=torch.long)
    for i, norm in enumerate(norms):
        for b in tqdm(range(0, n, batch_size), desc=f"{desc} {norm}", leave=False):
            xb = x[b:b + batch_size].to(device).repeat_interleave(k, 0)
            t = torch.arange(k, device=device).repeat(len(xb) // k)
            delta, s = mingd_delta(net, xb, t, norm, params)
            m = len(xb) // k
            feats[b:b + m, i] = _norm(delta.cpu(), norm).view(m, k)
            steps[b:b + m] += s.view(m, k).sum(1)
    return dict(features=feats, steps=steps, forwards=steps + len(norms) * k + 1, clean=clean)


def rows(features, feature):
    """Feature tensor (N, norms, D) -> one row per image (N, norms * D), norm by norm; MinGD's values
    sorted ascending over the targets first (class-agnostic, [DIc notebooks cell 9]), Blind Walk's not."""
    f = torch.as_tensor(features, dtype=torch.float32)
    if feature == "mingd":
        f = f.sort(dim=2).values
    return f.reshape(len(f), -1)


# ----------------------------------------------------------------------------- the sets
def _pool_draw(pool, n, generator):
    """n indices of `pool` (1-D int64) in a seeded random order."""
    return pool[torch.randperm(len(pool), generator=generator)[:n]]


def _public_pool(preset, ds, parts, data_dir, gamma):
    """(split name, indices) of the images no model of the preset trained on: the training images
    outside every part of the split; when there are none (cifar10's parts cover its training set), the
    test images outside the stylised ones of verification and outside eval_test (when eval_test is the
    whole test set, only the stylised ones are left out: evaluation measures accuracy, it trains nothing)."""
    used = torch.zeros(len(ds["train"]), dtype=torch.bool)
    for idx in parts.values():
        used[idx] = True
    untouched = torch.nonzero(~used).flatten()
    if len(untouched):
        return "train", untouched
    keep = torch.ones(len(ds["test"]), dtype=torch.bool)
    keep[load_styled(data_dir, preset["dataset"], gamma, "test").idx] = False
    n_eval = preset.get("eval_test")
    if isinstance(n_eval, int) and 0 < n_eval < len(ds["test"]):
        keep[:n_eval] = False
    return "test", torch.nonzero(keep).flatten()


def di_sets(preset, data_dir, seed, *, fit=None, test=None, gamma=None):
    """DI's private and public images for the victim of `preset` and `seed` (ownership.data.split_indices).

    private  images of the victim's part that it trained on unmodified: its part without the gamma
             fraction it saw stylised (load_styled(..., 'train'))
    public   images of the same distribution that no model trained on (_public_pool: fmnist's 42,000
             training images outside the three parts)
    Each side gets `fit` images for the regressor and `test` other images for the test (defaults: the
    preset's di_images, else presets.DI fit_images, test_images), drawn in a seeded random order. Returns dict(private_fit,
    private_test, public_fit, public_test: ImageSet, public_split: 'train' or 'test', parts: the split's
    {part: indices}, styled: indices of the stylised training images). Raises UserError when a pool has
    fewer than fit + test images."""
    sizes = preset.get("di_images") or {}
    fit = sizes.get("fit", DI["fit_images"]) if fit is None else fit
    test = sizes.get("test", DI["test_images"]) if test is None else test
    gamma = preset["gamma"] if gamma is None else gamma
    ds = load_dataset(preset["dataset"], data_dir)
    parts = split_indices(len(ds["train"]), preset["split"], seed)
    styled = load_styled(data_dir, preset["dataset"], gamma, "train").idx
    private = parts["victim"][~torch.isin(parts["victim"], styled)]
    split, public = _public_pool(preset, ds, parts, data_dir, gamma)
    for side, pool in (("private", private), ("public", public)):
        if len(pool) < fit + test:
            raise UserError(f"the {side} pool holds {len(pool)} images, fewer than the {fit} + {test} asked for; "
                            f"lower --fit-images or --test-images")
    g = torch.Generator().manual_seed(seed)
    pri, pub = _pool_draw(private, fit + test, g), _pool_draw(public, fit + test, g)
    return dict(private_fit=ds["train"].subset(pri[:fit]), private_test=ds["train"].subset(pri[fit:]),
                public_fit=ds[split].subset(pub[:fit]), public_test=ds[split].subset(pub[fit:]),
                public_split=split, parts=parts, styled=styled)


def victim_sets(preset, data_dir, victim_path, record, seed=None, *, fit=None, test=None, gamma=None):
    """di_sets for the victim checkpoint at `victim_path` whose record (checkpoints.load_model) is
    `record`: at `seed`, default the seed it records, and refused (UserError naming the --seed and --preset
    that fix it) when they do not fit the split it records. Returns (sets, seed)."""
    seed = record.get("seed", 0) if seed is None else seed
    sets = di_sets(preset, data_dir, seed, fit=fit, test=test, gamma=gamma)
    split = (record.get("preset") or {}).get("split")
    if split is not None and "seed" in record:
        n = len(load_dataset(preset["dataset"], data_dir)["train"])
        check_sets(sets, split_indices(n, split, record["seed"]), sets["styled"],
                   f"pass --seed {record['seed']} and the --preset {victim_path} was trained with "
                   f"({(record.get('preset') or {}).get('name', '?')})")
    return sets, seed


def check_sets(sets, parts, styled, fix):
    """Refuse sets that do not fit the victim's training data as `parts` ({part: training-set indices},
    e.g. from the victim checkpoint's recorded split and seed) and `styled` (its stylised training
    images) say: a public image in a training part, or a private image outside the victim's clean part,
    or a fit image also tested. `fix`: the command or flags that fix it, for the UserError."""
    pub = torch.cat([sets["public_fit"].idx, sets["public_test"].idx])
    pri = torch.cat([sets["private_fit"].idx, sets["private_test"].idx])
    if sets["public_split"] == "train":
        for part, idx in parts.items():
            k = int(torch.isin(pub, idx).sum())
            if k:
                raise UserError(f"the public set overlaps the {part} part that models trained on ({k} of "
                                f"{len(pub)} images): DI's public images must be unseen; {fix}")
    clean = parts["victim"][~torch.isin(parts["victim"], torch.as_tensor(styled))]
    k = int((~torch.isin(pri, clean)).sum())
    if k:
        raise UserError(f"{k} of {len(pri)} private images are not images the victim trained on unmodified; {fix}")
    for side in ("private", "public"):
        if torch.isin(sets[f"{side}_fit"].idx, sets[f"{side}_test"].idx).any():
            raise UserError(f"the {side} fit and test images overlap; draw them with di_sets ({fix})")


# ----------------------------------------------------------------------------- regressor and test
class Regressor:
    """DI's confidence regressor [DIc notebooks cells 8-12], fitted on the victim alone: features
    z-scored per norm with the victim's private fit mean/std, then 30 -> 100 -> ReLU -> 1 -> tanh;
    score near -1: private-like (the model trained on it), near +1: public-like."""

    def __init__(self, net, mean, std, feature):
        self.net, self.mean, self.std, self.feature = net, mean, std, feature

    @classmethod
    def fit(cls, private, public, feature, *, seed=0, params=None):
        """private, public: the victim's fit features (N, norms, D) (blind_walk / mingd 'features').
        Loss -mean((2y - 1) out) with y = 0 private, 1 public; full-batch SGD (params: presets.DI
        regressor). The initialisation follows `seed`; the global RNG is left as it was."""
        p = dict(DI["regressor"], **(params or {}))
        pri = torch.as_tensor(private, dtype=torch.float32)
        if feature == "mingd":
            pri = pri.sort(dim=2).values
        mean, std = pri.mean(dim=(0, 2)), pri.std(dim=(0, 2)).clamp_min(1e-12)
        reg = cls(None, mean, std, feature)
        x = torch.cat([reg.inputs(private), reg.inputs(public)])
        y = torch.cat([torch.zeros(len(private)), torch.ones(len(public))])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], p["hidden"]), torch.nn.ReLU(),
                                      torch.nn.Linear(p["hidden"], 1), torch.nn.Tanh())
        opt = torch.optim.SGD(net.parameters(), lr=p["lr"])
        for _ in range(p["steps"]):
            opt.zero_grad()
            loss = -((2 * y - 1) * net(x).squeeze(1)).mean()
            loss.backward()
            opt.step()
        reg.net = net.eval()
        return reg

    def inputs(self, features):
        """(N, norms, D) features -> (N, norms * D) z-scored rows, one per image."""
        f = torch.as_tensor(features, dtype=torch.float32)
        if self.feature == "mingd":
            f = f.sort(dim=2).values
        return rows((f - self.mean.view(1, -1, 1)) / self.std.view(1, -1, 1), "blind-walk")

    @torch.no_grad()
    def score(self, features):
        """Scores (N,) float64 of features (N, norms, D)."""
        return self.net(self.inputs(features)).squeeze(1).double().numpy()


def di_test(private, public, m=None, alpha=ALPHA):
    """DI's test on one suspect's regressor scores of the private and public test images (same order
    as drawn: random). One-sided Welch t-test of H1: mean(public) > mean(private) (stats.welch_greater)
    on the first m images of each side: the verdict. detection_rate: the fraction of the disjoint blocks
    of m images per side whose test rejects at alpha; p_all, delta_mu_all: the test on every test image.
    DI reports instead the harmonic mean of 100 overlapping draws, which is not a p-value (module
    docstring). Returns dict(p_value, delta_mu, t, m, alpha, verdict, detection_rate, draws, p_all,
    delta_mu_all, n). Raises UserError when m is below 2 or above the images per side."""
    private, public = np.asarray(private, np.float64), np.asarray(public, np.float64)
    n = min(len(private), len(public))
    m = DI["m"] if m is None else m
    if not 2 <= m <= n:
        raise UserError(f"--m {m}: give 2 to {n} images per side (the test images drawn per side)")
    blocks = [stats.welch_greater(public[k * m:(k + 1) * m], private[k * m:(k + 1) * m]) for k in range(n // m)]
    first, every = blocks[0], stats.welch_greater(public, private)
    return dict(p_value=first["p_value"], delta_mu=first["delta_mu"], t=first["t"], m=m, alpha=alpha,
                verdict="stolen" if first["p_value"] < alpha else "not stolen",
                detection_rate=float(np.mean([b["p_value"] < alpha for b in blocks])), draws=len(blocks),
                p_all=every["p_value"], delta_mu_all=every["delta_mu"], n=n,
                test="one-sided Welch t-test, public above private, first m images per side")


def combined_verdict(p_move, p_di, alpha=ALPHA):
    """MOVE and DI as one verdict: stolen when either test rejects at alpha / 2 (Bonferroni: the chance
    that either rejects a negative is at most alpha whatever the dependence between the two tests, so
    no independence is assumed, unlike Fisher's method). p_move, p_di in [0, 1]. Returns dict(verdict,
    p_value = min(1, 2 min(p_move, p_di)) (the Bonferroni p: below alpha exactly when the verdict is
    stolen), level = alpha / 2, rejected_by: the tests below it, 'move' and/or 'di'). Raises ValueError
    for a p outside [0, 1]."""
    for name, p in (("p_move", p_move), ("p_di", p_di)):
        if p is None or not 0 <= p <= 1:
            raise ValueError(f"{name} must be a p-value in [0, 1], got {p!r}")
    level = alpha / 2
    by = [name for name, p in (("move", p_move), ("di", p_di)) if p < level]
    return dict(verdict="stolen" if by else "not stolen", p_value=min(1.0, 2 * min(p_move, p_di)), level=level,
                rejected_by=by)


# ----------------------------------------------------------------------------- one victim, many suspects
class DatasetInference:
    """DI for one victim: its features on the private and public fit images fit the Regressor; each
    call tests one suspect on the test images of `sets` (di_sets).

    victim: torch model (takes normalised images); dataset: presets.DATASETS key; feature: one of
    constants.DI_FEATURES; norms: a subset of DI_NORMS in that order; scale: Blind Walk step factor
    (default presets.DI walk_scale[dataset]); walk, mingd_params: overrides of presets.DI's; m, alpha:
    the test's (default DI["m"], constants.ALPHA); seed: the walk directions and the regressor's
    initialisation. `victim_features`: the victim's fit features (N, norms, D) per side, kept."""

    def __init__(self, victim, sets, dataset, *, feature="blind-walk", norms=DI_NORMS, scale=None, walk=None,
                 mingd_params=None, m=None, alpha=ALPHA, seed=0, device="cpu"):
        if feature not in DI_FEATURES:
            raise UserError(f"unknown DI feature {feature!r}; choose one of: {', '.join(DI_FEATURES)}")
        bad = [n for n in norms if n not in DI_NORMS]
        if bad or not norms:
            raise UserError(f"unknown or no norms {bad or norms}; choose from: {', '.join(DI_NORMS)}")
        self.sets, self.dataset, self.feature, self.device = sets, dataset, feature, device
        self.norms = tuple(n for n in DI_NORMS if n in norms)
        self.scale = DI["walk_scale"].get(dataset, 1.0) if scale is None else scale
        self.walk, self.mingd_params = dict(DI["walk"], **(walk or {})), mingd_params
        self.m, self.alpha, self.seed = m, alpha, seed
        start = time.time()
        pri, pub = (self.features(victim, sets[k], "the victim") for k in ("private_fit", "public_fit"))
        self.victim_features = dict(private=pri["features"], public=pub["features"])
        self.regressor = Regressor.fit(pri["features"], pub["features"], feature, seed=seed)
        self.fit_record = dict(images=len(pri["features"]), queries=int(pri["queries"].sum() + pub["queries"].sum()),
                               seconds=round(time.time() - start, 1))

    def features(self, suspect, images, name):
        """Features of `suspect` on ImageSet `images`: the blind_walk or mingd dict, with 'queries' (N,)
        (MinGD: forward passes). suspect: a torch model, or for blind-walk a label oracle callable."""
        x, y = pixels(images), images.y
        k = DATASETS[self.dataset]["num_classes"]
        if self.feature == "mingd":
            if not isinstance(suspect, torch.nn.Module):
                raise UserError(f"MinGD (white-box) needs {name}'s weights; for a suspect that answers labels "
                                f"only use the blind-walk feature")
            r = mingd(suspect, x, y, self.dataset, norms=self.norms, params=self.mingd_params, device=self.device)
            return dict(r, queries=r["forwards"])
        oracle = ModelOracle(suspect, self.dataset, self.device) if isinstance(suspect, torch.nn.Module) else suspect
        oracle = CountingOracle(oracle, k, name)
        r = blind_walk(oracle, x, y, norms=self.norms, scale=self.scale, walk=self.walk, seed=self.seed,
                       desc=f"blind walk {name}")
        if int(r["queries"].sum()) != oracle.queries:  # the walk's own count and the oracle's must agree
            raise RuntimeError(f"query count mismatch: {int(r['queries'].sum())} != {oracle.queries}")
        return r

    def __call__(self, suspect, name="the suspect"):
        """Test one suspect (a torch model, or for blind-walk a label oracle: images (N, C, H, W) float in
        [0, 1] -> N top-1 labels). Returns dict(p_value, delta_mu, verdict, detection_rate, p_all,
        delta_mu_all, queries (labels asked, MinGD: forward passes), queries_per_image, seconds,
        clean_accuracy {private, public}, walks_capped (Blind Walk: fraction of walks that never left the
        true label), mean_stop {private, public}, feature, norms, scale, m, alpha). Raises UserError for
        a constant suspect or an oracle that answers fewer labels than asked."""
        start = time.time()
        out = {k: self.features(suspect, self.sets[k], name) for k in ("private_test", "public_test")}
        scores = {k: self.regressor.score(v["features"]) for k, v in out.items()}
        r = di_test(scores["private_test"], scores["public_test"], self.m, self.alpha)
        queries = int(sum(v["queries"].sum() for v in out.values()))
        images = sum(len(v["queries"]) for v in out.values())
        r.update(queries=queries, queries_per_image=queries / images, seconds=round(time.time() - start, 1),
                 feature=self.feature, norms=list(self.norms), scale=self.scale,
                 clean_accuracy={k.split("_")[0]: float((v["clean"] == self.sets[k].y).float().mean())
                                 for k, v in out.items()},
                 score_mean={k.split("_")[0]: float(v.mean()) for k, v in scores.items()})
        if self.feature == "blind-walk":
            cap = self.walk["steps"] + 1
            r.update(walks_capped=float(torch.cat([(v["stops"] == cap).flatten() for v in out.values()]).float().mean()),
                     mean_stop={k.split("_")[0]: float(v["stops"].float().mean()) for k, v in out.items()})
        return r
