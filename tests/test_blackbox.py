"""The black-box features by hand: prediction shifts (MOVE) and the true-label column."""
import numpy as np
import pytest

from ownership import blackbox


def _probs():
    """Two images, views = 2: per image the original's softmax, then two views' (3 classes)."""
    return np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.6, 0.1, 0.3],    # image 0: x, v0, v1
                     [0.1, 0.1, 0.8], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4]],   # image 1
                    np.float32)


def test_prediction_shift_by_hand():
    f = blackbox.features_from_probs(_probs(), 2, "prediction-shift", None)
    expect = [[0.2, -0.1, -0.1, 0.1, 0.1, -0.2],
              [-0.1, -0.1, 0.2, 0.0, -0.4, 0.4]]
    assert f.shape == (2, 6) and f.dtype == np.float32
    np.testing.assert_allclose(f, expect, atol=1e-6)


def test_shift_true_label_adds_the_probability_of_the_true_label_on_the_original():
    shift = blackbox.features_from_probs(_probs(), 2, "prediction-shift", None)
    f = blackbox.features_from_probs(_probs(), 2, "shift-true-label", np.array([0, 1]))
    assert f.shape == (2, 7)
    np.testing.assert_array_equal(f[:, :6], shift)
    np.testing.assert_allclose(f[:, 6], [0.7, 0.1], atol=1e-6)  # image 1's original says class 2, the label is 1


@pytest.mark.parametrize("answer", ["flat", "one class"])
def test_an_input_blind_model_shifts_nothing_and_is_rarely_right(answer):
    """What "shift-true-label" is for: the same answer for every query (an untrained model: a flat
    softmax, or with eval-mode batch norm often one class for everything) gives the zero shifts of a
    perfectly style-invariant model; only the last column tells it from a victim, which is right."""
    row = np.full(10, 0.1, np.float32) if answer == "flat" else np.eye(10, dtype=np.float32)[3]
    labels = np.arange(10)
    f = blackbox.features_from_probs(np.tile(row, (10 * 5, 1)), 4, "shift-true-label", labels)
    assert f.shape == (10, 41)
    np.testing.assert_array_equal(f[:, :40], 0)
    np.testing.assert_allclose(f[:, 40], row[labels], atol=1e-7)
    assert f[:, 40].mean() == pytest.approx(0.1)  # right as often as chance


def test_errors():
    with pytest.raises(ValueError, match="unknown black-box feature"):
        blackbox.features_from_probs(_probs(), 2, "shifts", None)
    with pytest.raises(ValueError, match="whole images of 4 queries"):
        blackbox.features_from_probs(_probs(), 3, "prediction-shift", None)
    with pytest.raises(ValueError, match="not one class index per image of 2"):
        blackbox.features_from_probs(_probs(), 2, "shift-true-label", np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="not one class index per image"):
        blackbox.features_from_probs(_probs(), 2, "shift-true-label", np.array([0, 3]))


def test_classifiers_saved_before_the_choice_read_prediction_shifts():
    assert blackbox.feature_of({"kind": "black-box", "feature": None}) == "prediction-shift"
    assert blackbox.feature_of({"kind": "black-box"}) == "prediction-shift"
    assert blackbox.feature_of({"kind": "black-box", "feature": "shift-true-label"}) == "shift-true-label"


def test_label_only_features_are_those_of_one_hot_answers():
    """train_clf.py --label-only: the features of a model's top labels, by hand on a model that answers
    with fixed probabilities (the _probs rows, whatever the image)."""
    import torch

    from ownership.data import ImageSet

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rows, self.k = torch.log(torch.from_numpy(_probs())), 0

        def forward(self, x):  # the next len(x) rows of _probs, cycling (queries come image-major)
            idx = (torch.arange(len(x)) + self.k) % len(self.rows)
            self.k += len(x)
            return self.rows[idx]

    styled = ImageSet(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1]), [str(i) for i in range(3)])
    full = blackbox.features(Fixed(), styled, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "fmnist", "cpu", 2, 0,
                             "shift-true-label")
    labels = blackbox.features(Fixed(), styled, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "fmnist", "cpu", 2, 0,
                               "shift-true-label", label_only=True)
    np.testing.assert_allclose(full, blackbox.features_from_probs(_probs(), 2, "shift-true-label", np.array([0, 1])),
                               atol=1e-6)
    tops = np.eye(3, dtype=np.float32)[_probs().argmax(1)]
    np.testing.assert_array_equal(labels, blackbox.features_from_probs(tops, 2, "shift-true-label", np.array([0, 1])))
