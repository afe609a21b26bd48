"""Mini-batch stochastic gradient descent for the digits network.

Each epoch shuffles the training set with a seeded generator, cuts it into
mini-batches of B samples and takes one gradient step per batch. The same seed
gives the same weights, bit for bit, on the same machine.

The learning rate is constant (as in Nielsen's book) or follows a cosine from η
in the first epoch down towards 0 in the last, which lets the last epochs settle
instead of bouncing around the minimum.
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from kqv.scratch.network import Network


@dataclass
class EpochRecord:
    epoch: int
    eta: float  # learning rate used in this epoch
    train_cost: float  # full cost (with L2) over the training set after the epoch
    train_accuracy: float
    validation_cost: float
    validation_accuracy: float
    test_accuracy: float
    seconds: float  # wall time of the SGD updates (not the evaluation)
    images_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Labeled:
    """Inputs (N, n_0) with integer labels (N,)."""

    x: np.ndarray
    labels: np.ndarray


def one_hot(labels: np.ndarray, num_classes: int, dtype: type = np.float64) -> np.ndarray:
    """(N,) integer labels -> (N, num_classes) rows with a single 1."""
    y = np.zeros((len(labels), num_classes), dtype=dtype)
    y[np.arange(len(labels)), labels] = 1.0
    return y


def accuracy(net: Network, data: Labeled) -> float:
    return float(np.mean(net.predict(data.x) == data.labels)) if len(data.labels) else float("nan")


def confusion_matrix(net: Network, data: Labeled) -> np.ndarray:
    """(n_classes, n_classes) counts; row = true class, column = predicted class."""
    k = net.sizes[-1]
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (data.labels, net.predict(data.x)), 1)
    return counts


def evaluate_cost(net: Network, data: Labeled, lmbda: float, n_train: int) -> float:
    y = one_hot(data.labels, net.sizes[-1], net.dtype)
    costs = [
        net.total_cost(data.x[i : i + 4096], y[i : i + 4096]) * len(y[i : i + 4096]) for i in range(0, len(y), 4096)
    ]
    data_term = sum(costs) / max(len(y), 1)
    return data_term + 0.5 * lmbda / n_train * sum(float(np.sum(w * w)) for w in net.weights)


SCHEDULES = ("cosine", "constant")


def learning_rate(eta: float, epoch: int, epochs: int, schedule: str) -> float:
    """η for `epoch` (1-based): constant, or η·½(1 + cos(π(epoch − 1)/epochs))."""
    if schedule == "constant":
        return eta
    if schedule == "cosine":
        return eta * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


def sgd(
    net: Network,
    train: Labeled,
    epochs: int,
    batch_size: int,
    eta: float,
    lmbda: float = 0.0,
    validation: Labeled | None = None,
    test: Labeled | None = None,
    seed: int = 0,
    schedule: str = "constant",
    on_batch: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> list[EpochRecord]:
    """Train `net` in place and return one record per epoch.

    on_batch(epoch, step, n_steps, batch_cost) is called after each step (for a
    progress bar); on_epoch(record) after each epoch's evaluation.
    """
    rng = np.random.default_rng(seed)
    n = len(train.labels)
    x_train = np.asarray(train.x, dtype=net.dtype)
    y_train = one_hot(train.labels, net.sizes[-1], net.dtype)  # (n, n_L)
    n_batches = -(-n // batch_size)
    empty = Labeled(x_train[:0], train.labels[:0])
    history = []
    for epoch in range(1, epochs + 1):
        eta_now = learning_rate(eta, epoch, epochs, schedule)
        start = time.perf_counter()
        order = rng.permutation(n)
        x_shuffled, y_shuffled = x_train[order], y_train[order]  # one copy per epoch; batches are views
        for step, i in enumerate(range(0, n, batch_size), start=1):
            xb, yb = x_shuffled[i : i + batch_size], y_shuffled[i : i + batch_size]  # (B, n_0), (B, n_L)
            batch_cost = net.sgd_step(xb, yb, eta_now, lmbda, n, with_cost=on_batch is not None)
            if on_batch is not None:
                on_batch(epoch, step, n_batches, batch_cost)
        seconds = time.perf_counter() - start
        val = validation if validation is not None else empty
        record = EpochRecord(
            epoch=epoch,
            eta=eta_now,
            train_cost=evaluate_cost(net, train, lmbda, n),
            train_accuracy=accuracy(net, train),
            validation_cost=evaluate_cost(net, val, lmbda, n) if len(val.labels) else float("nan"),
            validation_accuracy=accuracy(net, val),
            test_accuracy=accuracy(net, test) if test is not None else float("nan"),
            seconds=seconds,
            images_per_second=n / seconds if seconds > 0 else float("inf"),
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history
