"""`kqv bench digits`: matrix-form backprop vs the textbook per-sample loop.

The baseline below is the way Nielsen's `network.py` trains: inside each
mini-batch, backpropagate one sample at a time as column vectors (n, 1), sum the
gradients, then update. kqv's `Network` does the same arithmetic as one matrix
product per layer for the whole batch. Both start from the same weights and see
the same shuffled batches, so after the epoch their weights must agree to rounding:
the benchmark checks that before it reports a speed.
"""

import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from kqv.scratch.costs import COSTS
from kqv.scratch.functions import sigmoid, sigmoid_prime
from kqv.scratch.network import Network
from kqv.scratch.train import Labeled, one_hot


def textbook_epoch(weights, biases, x, y, order, batch_size, eta, lmbda, cost_name):
    """One SGD epoch, looping over samples inside each mini-batch (the baseline).

    weights[l]: (n_out, n_in), biases[l]: (n_out,), x: (N, n_0), y: (N, n_L) one-hot.
    Updated in place.
    """
    cost = COSTS[cost_name]
    n = len(x)
    cols_b = [b.reshape(-1, 1) for b in biases]  # views: (n_out, 1)
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        nabla_w = [np.zeros_like(w) for w in weights]
        nabla_b = [np.zeros_like(b) for b in cols_b]
        for i in batch:
            a = x[i].reshape(-1, 1)  # (n_0, 1)
            activations, zs = [a], []
            for layer, (w, b) in enumerate(zip(weights, cols_b, strict=True), start=1):
                z = w @ a + b  # (n_l, 1)
                a = cost.activation(z.T).T if layer == len(weights) else sigmoid(z)
                zs.append(z)
                activations.append(a)
            target = y[i].reshape(-1, 1)
            delta = cost.delta(zs[-1].T, a.T, target.T).T  # (n_L, 1); batch of one
            nabla_w[-1] += delta @ activations[-2].T
            nabla_b[-1] += delta
            for l in range(2, len(weights) + 1):
                delta = (weights[-l + 1].T @ delta) * sigmoid_prime(zs[-l])  # (n_{L-l+1}, 1)
                nabla_w[-l] += delta @ activations[-l - 1].T
                nabla_b[-l] += delta
        m = len(batch)
        for w, nw in zip(weights, nabla_w, strict=True):
            w *= 1 - eta * lmbda / n
            w -= eta / m * nw
        for b, nb in zip(cols_b, nabla_b, strict=True):
            b -= eta / m * nb


def matrix_epoch(net: Network, x, y, order, batch_size, eta, lmbda):
    """One SGD epoch as `kqv.scratch.train.sgd` runs it: shuffle once, then views."""
    n = len(x)
    xs, ys = x[order], y[order]
    for start in range(0, n, batch_size):
        net.sgd_step(xs[start : start + batch_size], ys[start : start + batch_size], eta, lmbda, n)


@dataclass
class DigitsBench:
    sizes: list[int]
    images: int
    batch_size: int
    dtype: str
    matrix_images_per_second: float
    textbook_images_per_second: float
    speedup: float
    max_weight_difference: float  # after one epoch each, from the same start: rounding only


def bench_digits(
    train: Labeled,
    sizes: list[int],
    batch_size: int = 10,
    eta: float = 0.5,
    lmbda: float = 0.0,
    cost: str = "cross-entropy",
    repeats: int = 3,
    seed: int = 0,
    dtype: type = np.float32,
) -> DigitsBench:
    """Time one epoch of each implementation over the same data in the same dtype; best of `repeats`."""
    x = np.asarray(train.x, dtype=dtype)
    y = one_hot(train.labels, sizes[-1], dtype)
    order = np.random.default_rng(seed).permutation(len(x))
    best_matrix = best_textbook = float("inf")
    diff = 0.0
    for _ in range(repeats):
        net = Network(sizes, cost=cost, seed=seed, dtype=dtype)
        ws = [w.copy() for w in net.weights]
        bs = [b.copy() for b in net.biases]
        t0 = time.perf_counter()
        matrix_epoch(net, x, y, order, batch_size, eta, lmbda)
        t1 = time.perf_counter()
        textbook_epoch(ws, bs, x, y, order, batch_size, eta, lmbda, cost)
        t2 = time.perf_counter()
        best_matrix, best_textbook = min(best_matrix, t1 - t0), min(best_textbook, t2 - t1)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(net.weights + net.biases, ws + bs, strict=True))
    return DigitsBench(
        sizes=list(sizes),
        images=len(x),
        batch_size=batch_size,
        dtype=np.dtype(dtype).name,
        matrix_images_per_second=len(x) / best_matrix,
        textbook_images_per_second=len(x) / best_textbook,
        speedup=best_textbook / best_matrix,
        max_weight_difference=diff,
    )


def machine_info() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def as_dict(result: DigitsBench) -> dict:
    return asdict(result)
