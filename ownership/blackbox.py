"""Black-box features (MOVE): how much a model's prediction on an image moves when the image carries
the external feature. Needs only the model's softmax outputs, so it works on a suspect behind an API.

For each stylised image x' with original x, the feature vector is the concatenation over K views v_k
of softmax(M(x)) - softmax(M(v_k(x'))), where v_0 is x' itself and v_1..v_{K-1} are seeded draws of
the training transform (crop/flip or rotation/flip). A model that learned the style (the victim and
models stolen from it) predicts x' like x; a benign model does not. With feature "shift-true-label"
(constants.BLACK_BOX_FEATURES) one more column follows: softmax(M(x))_y, the probability the model gives
the original's true label y (the defender's own test label), since a model that does not solve the task
shifts as little as the victim when it answers the same for every input (untrained: a flat softmax, or
one class for everything; docs/VALIDITY.md, "Shifts of models that solve the task").

Three steps, shared by the weights path (verify.py, train_clf.py) and the API path (ownership/api.py),
so both see the same pixels and the same arithmetic:
  queries()            the images to ask about, uint8, augmentation done in pixel space (exact as PNG;
                       data.augment on uint8)
  model_probs()        a model's softmax on those queries (the weights path; an API answers instead)
  features_from_probs  per-query probability vectors -> the feature matrix
Query order is image-major: for image i, row i*(K+1) is the original x_i, then v_0(x'_i) .. v_{K-1}(x'_i).
"""
import torch
import torch.nn.functional as F

from .constants import BLACK_BOX_FEATURES
from .data import augment, originals as data_originals
from .errors import UserError
from .training import INFER_BATCH, softmax


originals = data_originals  # ownership.data.originals; ownership/api.py still reads it here


def view_names(views):
    """Names of the K+1 queries per image, in query order: 'x' (the original), then 'v0' .. 'v<K-1>'."""
    return ["x"] + [f"v{k}" for k in range(views)]


def queries(styled, clean_x, dataset, views=4, seed=0):
    """uint8 (N * (views + 1), C, H, W): the images whose predictions make the features of the N
    stylised images `styled` (an ImageSet) with originals `clean_x` (uint8, N x C x H x W), image-major
    (view_names order). The augmented views v_1..v_{K-1} are drawn from a CPU generator seeded with
    `seed`, view by view over all N images, so they do not depend on any batch size."""
    if views < 1:
        raise ValueError(f"views must be at least 1, got {views}")
    gen = torch.Generator().manual_seed(seed)
    xs = styled.x
    vs = [clean_x, xs] + [augment(xs, dataset, gen) for _ in range(views - 1)]  # on uint8: exact pixels
    return torch.stack(vs, 1).reshape(-1, *xs.shape[1:]).contiguous()


def model_probs(model, q, dataset, device, batch_size=INFER_BATCH):
    """float32 (Q, num_classes) softmax of `model` on the uint8 queries q (Q, C, H, W), normalised as
    in training (training.softmax): what an honest API serving the model answers."""
    p = softmax(model, q, dataset, device, batch_size)
    if not torch.isfinite(p).all():
        raise UserError("NaN or Inf in the model's predictions; the checkpoint is broken or diverged")
    return p


def features_from_probs(probs, views, feature, labels):
    """float32 (N, views * num_classes [+ 1]) features from per-query probability vectors `probs`
    (N * (views + 1), num_classes), in queries() order: row i is the concatenation over k of
    probs[original i] - probs[v_k of image i] (feature "prediction-shift", MOVE), and for
    "shift-true-label" then probs[original i][labels[i]], with `labels` the N images' true labels
    (int, the stylised images keep their originals'). Raises ValueError on a shape that is not whole
    images, labels that do not match, or an unknown feature."""
    if feature not in BLACK_BOX_FEATURES:
        raise ValueError(f"unknown black-box feature {feature!r}; one of {', '.join(BLACK_BOX_FEATURES)}")
    p = torch.as_tensor(probs, dtype=torch.float32)
    if p.ndim != 2 or len(p) % (views + 1):
        raise ValueError(f"probabilities of shape {tuple(p.shape)} do not make whole images of {views + 1} queries")
    p = p.reshape(len(p) // (views + 1), views + 1, -1)
    f = (p[:, :1] - p[:, 1:]).reshape(len(p), -1)
    if feature == "shift-true-label":
        y = torch.as_tensor(labels, dtype=torch.long)
        if y.shape != (len(p),) or not ((0 <= y) & (y < p.shape[2])).all():
            raise ValueError(f"labels of shape {tuple(y.shape)} are not one class index per image of {len(p)}")
        f = torch.cat([f, p[:, 0].gather(1, y[:, None])], 1)
    return f.numpy()


def features(model, styled, clean_x, dataset, device, views, seed, feature, batch_size=INFER_BATCH, label_only=False):
    """(N, views * num_classes [+ 1]) float32 features of `model` on the stylised images `styled`
    (an ImageSet, whose labels y are the originals') and their originals: the model's softmax on
    queries() (the weights path), or with `label_only` the one-hot rows of its top labels (what a
    label-only API answers), then features_from_probs."""
    q = queries(styled, clean_x, dataset, views, seed)
    p = model_probs(model, q, dataset, device, batch_size)
    if label_only:
        p = one_hot(p.argmax(1), p.shape[1])
    return features_from_probs(p, views, feature, styled.y)


def feature_of(clf):
    """The black-box feature a meta-classifier checkpoint was trained on; classifiers saved before
    there was a choice read prediction shifts only."""
    return clf.get("feature") or "prediction-shift"


def one_hot(labels, num_classes):
    """float32 (Q, num_classes) one-hot rows of integer labels (Q,): the probability vector of a
    label-only API."""
    return F.one_hot(torch.as_tensor(labels, dtype=torch.long), num_classes).float()
