"""The black-box features by hand: prediction shifts (MOVE) and the confidence column."""
import numpy as np
import pytest

from ownership import blackbox


def _probs():
    """Two images, views = 2: per image the original's softmax, then two views' (3 classes)."""
    return np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.6, 0.1, 0.3],    # image 0: x, v0, v1
                     [0.1, 0.1, 0.8], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4]],   # image 1
                    np.float32)


def test_prediction_shift_by_hand():
    f = blackbox.features_from_probs(_probs(), 2, "prediction-shift")
    expect = [[0.2, -0.1, -0.1, 0.1, 0.1, -0.2],
              [-0.1, -0.1, 0.2, 0.0, -0.4, 0.4]]
    assert f.shape == (2, 6) and f.dtype == np.float32
    np.testing.assert_allclose(f, expect, atol=1e-6)


def test_shift_confidence_adds_the_top_probability_on_the_original():
    shift = blackbox.features_from_probs(_probs(), 2, "prediction-shift")
    f = blackbox.features_from_probs(_probs(), 2, "shift-confidence")
    assert f.shape == (2, 7)
    np.testing.assert_array_equal(f[:, :6], shift)
    np.testing.assert_allclose(f[:, 6], [0.7, 0.8], atol=1e-6)


def test_an_input_blind_model_shifts_nothing_and_is_not_confident():
    """What "shift-confidence" is for: the same flat softmax for every query (an untrained model) gives
    the zero shifts of a perfectly style-invariant model, and only the last column tells them apart."""
    flat = np.tile(np.array([[0.12, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.08]], np.float32), (10, 1))
    f = blackbox.features_from_probs(flat, 4, "shift-confidence")
    assert f.shape == (2, 41)
    np.testing.assert_array_equal(f[:, :40], 0)
    np.testing.assert_allclose(f[:, 40], 0.12, atol=1e-7)


def test_errors():
    with pytest.raises(ValueError, match="unknown black-box feature"):
        blackbox.features_from_probs(_probs(), 2, "shifts")
    with pytest.raises(ValueError, match="whole images of 4 queries"):
        blackbox.features_from_probs(_probs(), 3, "prediction-shift")


def test_classifiers_saved_before_the_choice_read_prediction_shifts():
    assert blackbox.feature_of({"kind": "black-box", "feature": None}) == "prediction-shift"
    assert blackbox.feature_of({"kind": "black-box"}) == "prediction-shift"
    assert blackbox.feature_of({"kind": "black-box", "feature": "shift-confidence"}) == "shift-confidence"
