"""ownership.gradients: the reduction rule, the engine and vmap against the reference batch-1 loop,
streaming of sign vectors, and the input-gradient and stylised-loss features.

Exact sign equality is checked in float64, where the methods' different summation orders change
values by ~1e-16 and no ReLU input or reduced value lies that close to 0; in float32 a batched
forward rounds differently from a batch-1 one (see the gradients module docstring), so the float32
test bounds the mismatches and checks that exact zeros stay exact.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from network import get_model
from ownership import gradients as G
from ownership.data import ImageSet


def reduced_grads(model, x, y):
    """Batched per-sample reduced gradients by the fastest method that applies (gradients.reduced_grads_fn)."""
    return G.reduced_grads_fn(model)(x, y)


def gradient_signs(model, images, dataset, device, batch_size=128, augment=True, seed=0, out=None, rows=None):
    """The paper's white-box features: int8 sign vectors (N x d), white_box_features("weight-signs")."""
    return G.white_box_features(model, images, dataset, device, "weight-signs", batch_size, augment, seed, out,
                                rows=rows)

@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast, and it does not stall (25x slower was seen) while
    another job holds one of two cores, as OpenMP threads waiting on each other do."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


METHODS = [("auto", None), ("unfold", True), ("grouped", True), ("shifted", True),
           ("unfold", False), ("grouped", False), ("shifted", False)]


def nontrivial_bn(model, in_channels, size, seed=0):
    """Random BatchNorm affine parameters and running statistics gathered on random images; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            m.momentum = None
            m.reset_running_stats()
        model.train()
        model(torch.randn(8, in_channels, size, size, generator=g, dtype=next(model.parameters()).dtype))
        for m in bns:
            m.momentum = 0.1
    return model.eval()


def all_methods(model, x, y):
    """{name: reduced gradients} for the loop, vmap and the engine with every convolution method."""
    out = {"loop": G.reduced_grads_loop(model, x, y), "vmap": G.reduced_grads_vmap(model, x, y),
           "reduced_grads": reduced_grads(model, x, y)}
    for method, cl in METHODS:
        out[f"engine-{method}-cl{cl}"] = G.GradientEngine(model, method, cl)(x, y)
    return out


# ----------------------------------------------------------------------------- (a) the rule
def test_rule_by_hand():
    """Conv2d(2,3,3) on a 3x3 image -> flatten -> Linear(3,2), every number written out."""
    conv, lin = nn.Conv2d(2, 3, 3), nn.Linear(3, 2)
    model = nn.Sequential(conv, nn.Flatten(), lin).double()
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-1, 1, 54, dtype=torch.float64).reshape(3, 2, 3, 3).flip(-1))
        conv.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        lin.weight.copy_(torch.tensor([[0.5, -1.0, 0.25], [-0.75, 0.5, 1.0]]))
        lin.bias.copy_(torch.tensor([0.05, -0.05]))
    x = torch.stack([torch.linspace(-2, 2, 18, dtype=torch.float64).reshape(2, 3, 3),
                     torch.linspace(1.5, -0.5, 18, dtype=torch.float64).reshape(2, 3, 3) ** 2])
    y = torch.tensor([1, 0])

    W, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    V, c = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    expected = []
    for xi, yi in zip(x.numpy(), y.numpy()):
        h = np.array([(W[o] * xi).sum() + b[o] for o in range(3)])   # conv output, 3 x 1 x 1
        z = V @ h + c                                                 # logits
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        d = p - np.eye(2)[yi]                                         # dCE/dz
        dh = V.T @ d                                                  # dCE/dh
        # d/dW[o,i,ky,kx] = dh[o] x[i,ky,kx]; its max over (ky,kx) picks max or min of x[i] by sign
        conv_part = [dh[o] * (xi[i].max() if dh[o] >= 0 else xi[i].min()) for o in range(3) for i in range(2)]
        lin_part = np.outer(d, h).ravel()                             # 2*3 <= 5000: kept whole
        expected.append(np.concatenate([conv_part, lin_part]))
        assert (dh > 0).any() and (dh < 0).any()                      # both branches of the max
    expected = np.array(expected)

    assert [k for _, _, k, _ in G.reduction_plan(model)] == ["conv_max", "skip", "full", "skip"]
    assert G.feature_dim(model) == 12
    for name, got in all_methods(model, x, y).items():
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14, err_msg=name)


class AllBranches(nn.Module):
    """One parameter for every branch of the rule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)          # 8*3 = 24: max over kernel positions; bias 1-D
        self.bn = nn.BatchNorm2d(8)                        # 1-D: skipped
        self.big = nn.Conv2d(8, 640, 1, bias=False)        # 640*8 = 5120 > 5000: skipped
        self.side = nn.Conv2d(8, 4, 3, stride=2, padding=2, dilation=2, bias=False)  # 32: max
        self.fc1 = nn.Linear(644, 10)                      # 6440 > 5000: max over the last dim -> 10
        self.fc2 = nn.Linear(10, 4)                        # 40: kept whole

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        a = F.adaptive_avg_pool2d(F.relu(self.big(h)), 1).flatten(1)
        s = F.adaptive_avg_pool2d(self.side(h), 1).flatten(1)
        return self.fc2(F.relu(self.fc1(torch.cat([a, s], 1))))


def test_rule_every_branch():
    torch.manual_seed(0)
    model = nontrivial_bn(AllBranches().double(), 3, 6)
    plan = {name: (kind, dim) for name, _, kind, dim in G.reduction_plan(model)}
    assert plan == {"conv.weight": ("conv_max", 24), "conv.bias": ("skip", 0), "bn.weight": ("skip", 0),
                    "bn.bias": ("skip", 0), "big.weight": ("skip", 0), "side.weight": ("conv_max", 32),
                    "fc1.weight": ("row_max", 10), "fc1.bias": ("skip", 0), "fc2.weight": ("full", 40),
                    "fc2.bias": ("skip", 0)}
    assert G.feature_dim(model) == 106

    x, y = torch.randn(3, 3, 6, 6, dtype=torch.float64), torch.tensor([0, 3, 1])
    params = dict(model.named_parameters())
    expected = []
    for i in range(3):  # full per-sample gradients by autograd, reduced here with explicit ops
        grads = dict(zip(params, torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]),
                                                     list(params.values()))))
        expected.append(torch.cat([grads["conv.weight"].amax((2, 3)).flatten(),
                                   grads["side.weight"].amax((2, 3)).flatten(),
                                   grads["fc1.weight"].max(1).values,
                                   grads["fc2.weight"].flatten()]))
    expected = torch.stack(expected)
    for name, got in all_methods(model, x, y).items():
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-14, msg=name)


def test_rule_boundary_and_reference_dims():
    plan = G.reduction_plan(nn.Sequential(nn.Conv2d(100, 50, 3), nn.Conv2d(50, 101, 1), nn.Linear(100, 50),
                                          nn.Linear(100, 51)))
    assert [(k, d) for name, _, k, d in plan if name.endswith("weight")] == \
        [("conv_max", 5000), ("skip", 0), ("full", 5000), ("row_max", 51)]
    assert G.feature_dim(get_model("wrn16-1", 10, 3)) == 22192  # the reference's number
    wrn28 = [(n, k, d) for n, _, k, d in G.reduction_plan(get_model("wrn28-10", 10, 3)) if d]
    assert wrn28 == [("conv1.weight", "conv_max", 48), ("blocks.0.conv1.weight", "conv_max", 2560),
                     ("blocks.0.shortcut.weight", "conv_max", 2560), ("fc.weight", "row_max", 10)]


# ----------------------------------------------------------------------------- (b) the same signs
@pytest.mark.parametrize("arch,channels,size,n", [("wrn10-1", 1, 28, 4), ("wrn16-1", 3, 32, 4),
                                                  ("resnet18-imgnet", 3, 64, 2)])
def test_signs_equal_loop(arch, channels, size, n):
    torch.manual_seed(0)
    model = nontrivial_bn(get_model(arch, 10, channels).double(), channels, size)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, channels, size, size, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (n,), generator=g)
    res = all_methods(model, x, y)
    ref = res.pop("loop")
    assert ref.shape == (n, G.feature_dim(model))
    assert (ref != 0).float().mean() > 0.5
    for name, got in res.items():
        assert torch.equal(torch.sign(got), torch.sign(ref)), \
            f"{name}: {int((torch.sign(got) != torch.sign(ref)).sum())} signs differ"
        assert (got - ref).abs().max() <= 1e-9 * ref.abs().max(), name


def test_float32_dead_relu_zeros_stay_exact():
    """float32: a channel killed by its BatchNorm gives exactly 0 in every method; the rest agree in
    sign up to the rare rounding flips (a bound far above their rate, a few per million)."""
    torch.manual_seed(0)
    model = nontrivial_bn(get_model("wrn16-1", 10, 3), 3, 32)
    with torch.no_grad():
        model.blocks[0].bn2.bias[[2, 7]] = -1e3  # ReLU output 0 everywhere: blocks.0.conv2's inputs 2, 7
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 3, 32, 32, generator=g), torch.randint(0, 10, (6,), generator=g)
    start = sum(d for name, *_, d in G.reduction_plan(model)[:G.reduction_plan(model).index(
        next(p for p in G.reduction_plan(model) if p[0] == "blocks.0.conv2.weight"))])
    dead = np.zeros(G.feature_dim(model), bool)
    dead[start:start + 256] = (np.arange(256) % 16 == 2) | (np.arange(256) % 16 == 7)  # (out, in) order
    res = all_methods(model, x, y)
    ref = res.pop("loop")
    assert (ref[:, dead] == 0).all() and (ref[:, ~dead] != 0).float().mean() > 0.9
    for name, got in res.items():
        assert (got[:, dead] == 0).all(), name
        assert int((torch.sign(got) != torch.sign(ref)).sum()) <= 1e-4 * ref.numel(), name


def test_engine_rejects_what_it_cannot_do():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(TypeError):
        G.GradientEngine(model)
    x, y = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.tensor([0, 1])
    model = model.double()
    torch.testing.assert_close(reduced_grads(model, x, y), G.reduced_grads_loop(model, x, y))
    with pytest.raises(ValueError):
        G.GradientEngine(nn.Linear(2, 2), conv_method="nope")


# ----------------------------------------------------------------------------- (c) streaming
def test_gradient_signs_memmap_and_batch_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(G, "AUG_BLOCK", 4)  # blocks smaller than some batches and larger than others
    torch.manual_seed(0)
    model = nontrivial_bn(get_model("wrn10-1", 10, 1).double(), 1, 28)
    g = torch.Generator().manual_seed(3)
    images = ImageSet(torch.randint(0, 256, (10, 1, 28, 28), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (10,), generator=g), [str(i) for i in range(10)])
    d = G.feature_dim(model)
    whole = gradient_signs(model, images, "fmnist", "cpu", batch_size=10, augment=True, seed=5)
    assert whole.shape == (10, d) and whole.dtype == np.int8 and set(np.unique(whole)) <= {-1, 0, 1}
    for bs in (1, 3, 4, 7):
        path = tmp_path / f"g{bs}.npy"
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.int8, shape=(10, d))
        got = gradient_signs(model, images, "fmnist", "cpu", batch_size=bs, augment=True, seed=5, out=arr)
        assert got is arr
        arr.flush()
        del arr, got
        np.testing.assert_array_equal(np.load(path, mmap_mode="r"), whole, err_msg=f"batch size {bs}")
    # the content: the loop on the same transformed images
    xs, ys = zip(*G._blocks(images, "fmnist", "cpu", torch.float64, True, 5))
    ref = torch.sign(G.reduced_grads_loop(model, torch.cat(xs), torch.cat(ys))).to(torch.int8).numpy()
    np.testing.assert_array_equal(whole, ref)
    other_seed = gradient_signs(model, images, "fmnist", "cpu", batch_size=10, augment=True, seed=6)
    assert (other_seed != whole).any()
    plain = gradient_signs(model, images, "fmnist", "cpu", batch_size=3, augment=False)
    xs, ys = zip(*G._blocks(images, "fmnist", "cpu", torch.float64, False, 0))
    np.testing.assert_array_equal(
        plain, torch.sign(G.reduced_grads_loop(model, torch.cat(xs), torch.cat(ys))).to(torch.int8).numpy())


def test_gradient_signs_rows_match_the_whole_set(monkeypatch):
    """A shard (rows=) gets the rows of the whole set: the augmentation draws of the blocks before it
    are skipped, not restarted (restarting gives other images)."""
    monkeypatch.setattr(G, "AUG_BLOCK", 4)
    torch.manual_seed(0)
    model = nontrivial_bn(get_model("wrn10-1", 10, 1), 1, 28)
    g = torch.Generator().manual_seed(3)
    images = ImageSet(torch.randint(0, 256, (10, 1, 28, 28), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (10,), generator=g), [str(i) for i in range(10)])
    whole = gradient_signs(model, images, "fmnist", "cpu", batch_size=4, seed=5)
    for rows in (slice(0, 4), slice(4, 8), slice(8, 10), slice(4, 10), slice(10, 10)):
        np.testing.assert_array_equal(gradient_signs(model, images, "fmnist", "cpu", batch_size=4, seed=5,
                                                       rows=rows), whole[rows], err_msg=str(rows))
    restarted = gradient_signs(model, images.subset(range(4, 10)), "fmnist", "cpu", batch_size=4, seed=5)
    assert (restarted != whole[4:]).any()
    with pytest.raises(ValueError):
        gradient_signs(model, images, "fmnist", "cpu", rows=slice(2, 10))


def test_shard_rows_cover_the_set_in_whole_units(monkeypatch):
    from ownership import distributed as dd
    from ownership.gradient_sets import shard_rows
    monkeypatch.setattr(dd, "world", lambda: 3)
    for n, bs in ((300, 64), (300, 128), (1000, 100), (5, 128), (0, 1)):
        unit = np.lcm(G.AUG_BLOCK, bs)
        parts = []
        for r in range(3):
            monkeypatch.setattr(dd, "rank", lambda r=r: r)
            parts.append(shard_rows(n, bs))
        assert parts[0].start == 0 and parts[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        assert all((p.start % unit == 0 or p.start == n) and (p.stop % unit == 0 or p.stop == n) for p in parts)


# ----------------------------------------------------------------------------- (d) mixed precision
def test_signs_unchanged_under_bf16_autocast():
    """Training runs under bf16 autocast on CUDA; gradient sets must not. gradient_signs and the engine
    called inside a bf16 autocast region give the float32 signs bit for bit, while the engine's own
    computation left under that autocast (what the autocast-off guard prevents) changes signs."""
    torch.manual_seed(0)
    model = nontrivial_bn(get_model("wrn10-1", 10, 1), 1, 28)
    g = torch.Generator().manual_seed(3)
    images = ImageSet(torch.randint(0, 256, (16, 1, 28, 28), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (16,), generator=g), [str(i) for i in range(10)])
    x, y = next(G._blocks(images, "fmnist", "cpu", torch.float32, True, 1))
    engine = G.GradientEngine(model)
    fp32 = gradient_signs(model, images, "fmnist", "cpu", batch_size=8, seed=1)
    fp32_engine = engine(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        under = gradient_signs(model, images, "fmnist", "cpu", batch_size=8, seed=1)
        under_engine = engine(x, y)
        bf16 = engine._compute(x, y)
    np.testing.assert_array_equal(under, fp32)
    assert under_engine.dtype == torch.float32 and torch.equal(under_engine, fp32_engine)
    assert bf16.dtype == torch.bfloat16
    flipped = (torch.sign(bf16.float()) != torch.sign(fp32_engine)).sum().item()
    assert flipped > 0  # bf16 would change the sign vectors


# ----------------------------------------------------------------------------- (e) input gradients
def test_input_gradients_equal_one_image_at_a_time():
    """The batched input gradient (one backward of the summed loss) is each image's own gradient: the
    one-image loop with torch.autograd.grad, in float64, to rounding. The streamed "input-gradient"
    features are that gradient of the images as _blocks makes them, then log CE on them and on their
    clean originals, float32, the same in any batch size and under bf16 autocast."""
    torch.manual_seed(0)
    model = nontrivial_bn(get_model("wrn10-1", 10, 1).double(), 1, 28)
    g = torch.Generator().manual_seed(3)
    images = ImageSet(torch.randint(0, 256, (10, 1, 28, 28), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (10,), generator=g), [str(i) for i in range(10)])
    originals = torch.randint(0, 256, (10, 1, 28, 28), generator=g, dtype=torch.uint8)
    x, y = next(G._blocks(images, "fmnist", "cpu", torch.float64, False, 0))
    xc, _ = next(G._blocks(ImageSet(originals, images.y, images.classes), "fmnist", "cpu", torch.float64, False, 0))
    loop = []
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        loop.append(torch.autograd.grad(F.cross_entropy(model(xi), y[i:i + 1]), xi)[0].flatten(1))
    batched, loss = G.input_gradients(model, x, y)
    assert batched.shape == (10, 784) and batched.abs().sum() > 0
    torch.testing.assert_close(batched, torch.cat(loop), rtol=1e-10, atol=1e-14)
    assert G.white_box_dim(model, "input-gradient", "fmnist") == 786
    feats = [G.white_box_features(model, images, "fmnist", "cpu", "input-gradient", batch_size=bs, augment=False,
                                  originals=originals) for bs in (3, 10)]
    assert feats[0].dtype == np.float32 and feats[0].shape == (10, 786)
    np.testing.assert_array_equal(feats[0], feats[1])
    with torch.no_grad():
        log_ce = [F.cross_entropy(model(a), y, reduction="none").log().numpy() for a in (x, xc)]
    np.testing.assert_allclose(loss.log().numpy(), log_ce[0], rtol=1e-12)  # the loss of the same forward
    np.testing.assert_allclose(feats[0][:, :784], batched.float().numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(feats[0][:, 784], log_ce[0], rtol=1e-5)
    np.testing.assert_allclose(feats[0][:, 785], log_ce[1], rtol=1e-5)
    m32 = model.float()  # autocast leaves float64 alone
    kw = dict(batch_size=10, augment=False, originals=originals)
    fp32 = G.white_box_features(m32, images, "fmnist", "cpu", "input-gradient", **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        np.testing.assert_array_equal(G.white_box_features(m32, images, "fmnist", "cpu", "input-gradient", **kw), fp32)
    with pytest.raises(ValueError):
        G.white_box_features(model, images, "fmnist", "cpu", "weights")
    with pytest.raises(ValueError):
        G.white_box_features(model, images, "fmnist", "cpu", "input-gradient")  # no originals


def test_stylised_loss_is_the_log_loss_of_each_image():
    """The "stylised-loss" features are log CE of each stylised image as _blocks makes it (by hand, one
    image at a time, float64), one column, float32, the same in any batch size and under bf16 autocast,
    equal to the input-gradient features' stylised-loss column; a loss that rounds to 0 stays finite."""
    torch.manual_seed(0)
    model = nontrivial_bn(get_model("wrn10-1", 10, 1).double(), 1, 28)
    g = torch.Generator().manual_seed(4)
    images = ImageSet(torch.randint(0, 256, (10, 1, 28, 28), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (10,), generator=g), [str(i) for i in range(10)])
    x, y = next(G._blocks(images, "fmnist", "cpu", torch.float64, False, 0))
    with torch.no_grad():
        by_hand = [math.log(-torch.log_softmax(model(x[i:i + 1]), 1)[0, y[i]].item()) for i in range(len(x))]
    assert G.white_box_dim(model, "stylised-loss", "fmnist") == 1
    feats = [G.white_box_features(model, images, "fmnist", "cpu", "stylised-loss", batch_size=bs, augment=False)
             for bs in (3, 10)]
    assert feats[0].dtype == np.float32 and feats[0].shape == (10, 1)
    np.testing.assert_array_equal(feats[0], feats[1])
    np.testing.assert_allclose(feats[0][:, 0], by_hand, rtol=1e-5)
    both = G.white_box_features(model, images, "fmnist", "cpu", "input-gradient", batch_size=10, augment=False,
                                originals=images.x)
    np.testing.assert_array_equal(feats[0][:, 0], both[:, 784])
    m32 = model.float()
    fp32 = G.white_box_features(m32, images, "fmnist", "cpu", "stylised-loss", batch_size=10, augment=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        np.testing.assert_array_equal(
            G.white_box_features(m32, images, "fmnist", "cpu", "stylised-loss", batch_size=10, augment=False), fp32)
    sure = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).double()
    with torch.no_grad():
        sure[1].weight.zero_()
        sure[1].bias.copy_(torch.where(torch.arange(10) == 0, 1e3, 0.0))  # CE of class 0 rounds to 0
    z = G.stylised_loss_features(sure, x, torch.zeros(len(x), dtype=torch.long))
    assert torch.equal(z, torch.full_like(z, math.log(G.LOSS_FLOOR)))
