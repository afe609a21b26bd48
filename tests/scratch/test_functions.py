import warnings

import numpy as np
import pytest
import torch
from scipy.special import expit

from kqv.scratch.functions import log_softmax, sigmoid, softmax


def test_sigmoid_matches_reference_and_keeps_tail_precision():
    z = np.linspace(-700, 700, 20001)
    np.testing.assert_allclose(sigmoid(z), expit(z), rtol=1e-13, atol=0)
    assert sigmoid(np.array([-40.0]))[0] == pytest.approx(4.248354255291589e-18, rel=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e300])
def test_functions_stay_finite_and_silent_for_huge_inputs(scale):
    z = np.array([[-1.0, 0.0, 1.0, 2.0]]) * scale
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning fails the test
        s, p, lp = sigmoid(z), softmax(z), log_softmax(z)
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=-1), 1.0)
    assert np.all(np.isfinite(lp)) or scale == 1e300  # log 0 = -inf is the exact answer there
    np.testing.assert_allclose(p, torch.softmax(torch.tensor(z), -1).numpy(), rtol=1e-12)


def test_softmax_and_log_softmax_match_torch():
    z = np.random.default_rng(0).normal(scale=5, size=(7, 10))
    np.testing.assert_allclose(softmax(z), torch.softmax(torch.tensor(z), -1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(log_softmax(z), torch.log_softmax(torch.tensor(z), -1).numpy(), rtol=1e-12)
