"""Hand-written backprop against finite differences, torch autograd and the per-sample loop."""

import numpy as np
import pytest
import torch

from kqv.bench.digits import textbook_epoch
from kqv.scratch import Network
from kqv.scratch.train import one_hot

SIZES = [6, 5, 4, 3]  # two hidden layers, so the recursion δ_l = (δ_{l+1} W) ⊙ σ' runs twice
COSTS = ["cross-entropy", "quadratic"]


def batch(seed=1, n=8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, SIZES[0]))
    y = one_hot(rng.integers(0, SIZES[-1], size=n), SIZES[-1])
    return x, y


def relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("lmbda", [0.0, 2.5])
def test_backprop_equals_central_finite_differences(cost, lmbda):
    net = Network(SIZES, cost=cost, seed=0)
    x, y = batch()
    n = 20  # training-set size in the L2 term λ/2n Σw²
    grads = net.backprop(x, y, lmbda, n)
    eps = 1e-5
    params = net.weights + net.biases
    analytic = grads.weights + grads.biases
    for p, g in zip(params, analytic, strict=True):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            plus = net.total_cost(x, y, lmbda, n)
            p[idx] = old - eps
            minus = net.total_cost(x, y, lmbda, n)
            p[idx] = old
            numeric[idx] = (plus - minus) / (2 * eps)
        assert relative_error(g, numeric) < 1e-6


def torch_cost(weights, biases, x, y, cost, lmbda, n):
    a = torch.tensor(x)
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z = a @ w.T + b
        a = torch.sigmoid(z) if i < len(weights) - 1 else z
    if cost == "cross-entropy":
        data = torch.nn.functional.cross_entropy(a, torch.tensor(y).argmax(1))
    else:
        data = 0.5 * ((torch.sigmoid(a) - torch.tensor(y)) ** 2).sum(1).mean()
    return data + lmbda / (2 * n) * sum((w**2).sum() for w in weights)


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("lmbda", [0.0, 2.5])
def test_backprop_equals_torch_autograd(cost, lmbda):
    net = Network(SIZES, cost=cost, seed=3)
    x, y = batch(seed=4, n=16)
    weights = [torch.tensor(w, requires_grad=True) for w in net.weights]
    biases = [torch.tensor(b, requires_grad=True) for b in net.biases]
    loss = torch_cost(weights, biases, x, y, cost, lmbda, n=50)
    loss.backward()
    assert net.total_cost(x, y, lmbda, 50) == pytest.approx(loss.item(), rel=1e-12)
    grads = net.backprop(x, y, lmbda, 50)
    for ours, theirs in zip(grads.weights + grads.biases, weights + biases, strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cost", COSTS)
def test_matrix_form_equals_per_sample_loop(cost):
    """One epoch of matrix-form SGD equals Nielsen-style per-sample accumulation."""
    net = Network(SIZES, cost=cost, seed=5)
    ws, bs = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    x, y = batch(seed=6, n=23)  # last mini-batch is short: 23 = 2·10 + 3
    order = np.random.default_rng(0).permutation(23)
    xs, ys = x[order], y[order]
    for i in range(0, 23, 10):
        net.sgd_step(xs[i : i + 10], ys[i : i + 10], eta=0.7, lmbda=1.5, n=23)
    textbook_epoch(ws, bs, x, y, order, batch_size=10, eta=0.7, lmbda=1.5, cost_name=cost)
    for ours, loop in zip(net.weights + net.biases, ws + bs, strict=True):
        np.testing.assert_allclose(ours, loop, rtol=1e-12, atol=1e-14)


def test_sgd_step_is_nielsens_update_rule():
    """w ← (1 − ηλ/n) w − (η/m) Σ_x ∂C_x/∂w, with ∂C_x from single-sample backprop."""
    net = Network(SIZES, seed=7)
    x, y = batch(seed=8, n=5)
    eta, lmbda, n = 0.3, 4.0, 40
    w0 = [w.copy() for w in net.weights]
    per_sample = [net.backprop(x[i : i + 1], y[i : i + 1]).weights for i in range(5)]
    net.sgd_step(x, y, eta, lmbda, n)
    for l, w in enumerate(net.weights):
        expected = (1 - eta * lmbda / n) * w0[l] - eta / 5 * sum(g[l] for g in per_sample)
        np.testing.assert_allclose(w, expected, rtol=1e-12, atol=1e-15)
