"""reproduce.py --decimals / --top-k (issue 32, item 4): the API's answer form that the black-box column
is verified on, checked by hand, and its bad values refused before any job runs."""
import numpy as np
import pytest

import reproduce
from ownership.errors import UserError


def form(*flags):
    return reproduce.answer_form(reproduce.get_parser().parse_args(["--preset", "smoke", *flags]), 10)


def test_full_answers_are_not_reduced():
    assert form() is None


def test_top_k_then_rounding_then_renormalised_by_hand():
    p = np.array([[0.5, 0.26, 0.14, 0.1] + [0.0] * 6])
    np.testing.assert_allclose(form("--top-k", "2")(p)[0, :4], [0.5 / 0.76, 0.26 / 0.76, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(form("--decimals", "1")(p)[0, :4], [0.5, 0.3, 0.1, 0.1], rtol=1e-6)  # sums to 1 again
    np.testing.assert_allclose(form("--decimals", "1", "--top-k", "3")(p)[0, :4], [0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9, 0],
                               rtol=1e-6)


@pytest.mark.parametrize("flags, phrase", [(("--decimals", "-1"), "--decimals -1"), (("--top-k", "0"), "--top-k 0"),
                                           (("--top-k", "11"), "give 1 to 10 classes")])
def test_bad_values_are_refused(flags, phrase):
    with pytest.raises(UserError, match=phrase):
        form(*flags)
