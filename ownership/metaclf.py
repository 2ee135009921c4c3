"""The ownership meta-classifier: victim-like (1) against benign (0) feature vectors.

Inputs are L2-normalised per vector (l2=True: weight signs, train_clf.py --l2 auto), then standardised with a mean/std fitted on the training split
and stored in the checkpoint, so verification applies exactly the training transform (the reference
standardised at training only). Training follows the reference: 80/20 split, SGD lr 0.01, momentum
0.9, wd 5e-4, batch 128, the epoch with the best held-out accuracy kept. Inputs stream from
(memory-mapped) arrays in batches.
"""
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from network import MetaMLP, default_hidden


def _l2(x, on=True):
    x = x.float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) if on else x


def _rows(arrays, idx):
    """Rows `idx` (sorted global indices over the concatenated arrays) as a float tensor, read
    array by array so memory-mapped sets are touched only where needed."""
    offsets = np.cumsum([0] + [len(a) for a in arrays])
    parts = []
    for k, a in enumerate(arrays):
        sel = idx[(idx >= offsets[k]) & (idx < offsets[k + 1])] - offsets[k]
        if len(sel):
            parts.append(np.asarray(a[sel]))
    return torch.from_numpy(np.concatenate(parts).astype(np.float32))


def fit(pos, neg, epochs=100, lr=0.01, batch_size=128, hidden_cap=256, seed=0, device="cpu",
        sources=None, desc="meta-classifier", l2=True, stop_at_perfect=True):
    """pos/neg: lists of (N_i, d) arrays. Returns the checkpoint dict. `l2=False` skips the per-vector
    L2 normalisation (for features whose length carries the signal, like black-box prediction shifts).
    The epoch with the best held-out accuracy is kept (the first, on ties), so once an epoch reaches
    100 % no later one can replace it: `stop_at_perfect` stops there, with the same result as running
    all `epochs` (white-box classifiers usually get there in epoch 0 or 1, docs/BENCHMARKS.md)."""
    arrays = list(pos) + list(neg)
    d = arrays[0].shape[1]
    for a in arrays:
        if a.shape[1] != d:
            raise ValueError(f"feature dims differ ({a.shape[1]} vs {d}); gradient sets of one architecture only")
    labels = np.concatenate([np.full(len(a), 1 if i < len(pos) else 0) for i, a in enumerate(arrays)])
    n = len(labels)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_tr = int(round(0.8 * n))
    tr, te = np.sort(perm[:n_tr]), np.sort(perm[n_tr:])

    # standardisation statistics of the L2-normalised training rows, streamed
    s1 = torch.zeros(d, dtype=torch.float64)
    s2 = torch.zeros(d, dtype=torch.float64)
    for i in range(0, n_tr, 1024):
        xb = _l2(_rows(arrays, tr[i:i + 1024]), l2).double()
        s1 += xb.sum(0)
        s2 += (xb * xb).sum(0)
    mean = s1 / n_tr
    std = (s2 / n_tr - mean * mean).clamp_min(0).sqrt()
    mean, std = mean.float(), std.float().clamp_min(1e-6)

    torch.manual_seed(seed)
    hidden = default_hidden(d, hidden_cap)
    model = MetaMLP(d, hidden).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    y_all = torch.from_numpy(labels)

    def prep(rows):
        return ((_l2(_rows(arrays, rows), l2) - mean) / std).to(device)

    # held-out rows are small enough to keep prepared
    x_te = prep(te) if len(te) else None
    y_te = y_all[np.sort(te)].to(device) if len(te) else None
    best = (-1.0, None, 0)
    gen = torch.Generator().manual_seed(seed)
    epoch = -1
    for epoch in tqdm(range(epochs), desc=desc, leave=False):
        model.train()
        order = tr[torch.randperm(n_tr, generator=gen).numpy()]
        for i in range(0, n_tr, batch_size):
            rows = np.sort(order[i:i + batch_size])
            loss = F.cross_entropy(model(prep(rows)), y_all[rows].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if x_te is not None:
            model.eval()
            with torch.no_grad():
                acc = (model(x_te).argmax(1) == y_te).float().mean().item()
        else:
            acc = 0.0
        if acc > best[0]:
            best = (acc, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, epoch)
        if stop_at_perfect and acc >= 1.0:
            break
    return dict(state_dict=best[1], d=d, hidden=list(hidden), mean=mean, std=std,
                test_acc=best[0], best_epoch=best[2], epochs_run=epoch + 1, n_train=n_tr, n_test=len(te), l2=l2,
                sources=sources or {})


def auc(pos_scores, neg_scores):
    """Area under the ROC curve of scores, positives against negatives: the fraction of (positive,
    negative) pairs that the positive wins, ties counting half (the Mann-Whitney U / (n_pos n_neg))."""
    p, n = np.asarray(pos_scores, np.float64)[:, None], np.asarray(neg_scores, np.float64)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


MAX_PAIRS = 16  # leave-pair-out fits per classifier at most (a seeded subset of the pairs beyond that)


def model_level_auc(pos, neg, device="cpu", max_pairs=MAX_PAIRS, **fit_kw):
    """How well the classifier recognises the feature in models it never saw: leave-pair-out AUC
    (Airola et al., "An experimental comparison of cross-validation techniques for estimating the area
    under the ROC curve", 2011). For a pair (victim-like model i, benign model j), fit on all the other
    models (fit_kw as `fit`), then score both left-out models by their mean P(stolen) over their rows;
    the AUC is the fraction of pairs in which i scores above j (ties half). Leaving one model out at a
    time instead would compare scores of classifiers trained on different class balances: with 2
    victim-like models, a left-out one scored below every left-out benign model whatever the features
    (docs/VALIDITY.md). pos/neg: lists of (N_i, d) arrays, one per model; at most `max_pairs` pairs
    (a seeded subset). Returns dict(auc, pairs=[(i, j, score_i, score_j)]), or None when a class has
    fewer than two models (a pair left out would leave it empty)."""
    if len(pos) < 2 or len(neg) < 2:
        return None
    pairs = [(i, j) for i in range(len(pos)) for j in range(len(neg))]
    if len(pairs) > max_pairs:
        keep = np.random.default_rng(fit_kw.get("seed", 0)).choice(len(pairs), max_pairs, replace=False)
        pairs = [pairs[k] for k in sorted(keep)]
    out = []
    for i, j in tqdm(pairs, desc="model-level AUC (leave pair out)", leave=False):
        ck = fit([a for k, a in enumerate(pos) if k != i], [a for k, a in enumerate(neg) if k != j], device=device,
                 **fit_kw)
        out.append((i, j, float(predict_proba(ck, pos[i], device).mean()), float(predict_proba(ck, neg[j], device).mean())))
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for _, _, a, b in out]
    return dict(auc=float(np.mean(wins)), pairs=out)


def load_model(ck, device="cpu"):
    model = MetaMLP(ck["d"], tuple(ck["hidden"]))
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval()


@torch.no_grad()
def predict_proba(ck, x, device="cpu", batch_size=1024):
    """P(stolen) for each row of x (N, d), with the checkpoint's own normalisation."""
    model = load_model(ck, device)
    mean, std = ck["mean"].to(device), ck["std"].to(device)
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.array(x[i:i + batch_size], dtype=np.float32)).to(device)  # a copy: x may be a read-only map
        out.append(F.softmax(model((_l2(xb, ck.get("l2", True)) - mean) / std), 1)[:, 1].cpu())
    return torch.cat(out).numpy().astype(np.float64)
