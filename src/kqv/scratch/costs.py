"""The two costs of the digits network, each paired with its output activation.

For one sample x with one-hot target y and output pre-activation z (the last
layer's weighted input):

- quadratic, sigmoid output (Nielsen's `network.py`):
  C_x = ½‖σ(z) − y‖²,        ∂C_x/∂z = (σ(z) − y) ⊙ σ'(z)
- cross-entropy, softmax output:
  C_x = −Σ_j y_j log softmax(z)_j,   ∂C_x/∂z = softmax(z) − y

The network's cost over a mini-batch is the mean of C_x, so `delta` returns
∂C/∂z already divided by the batch size B.
"""

import numpy as np

from kqv.scratch.functions import log_softmax, sigmoid, softmax


class QuadraticCost:
    name = "quadratic"

    @staticmethod
    def activation(z: np.ndarray) -> np.ndarray:
        return sigmoid(z)

    @staticmethod
    def value(z: np.ndarray, y: np.ndarray) -> float:
        """Mean over the batch of ½‖σ(z) − y‖².  z, y: (B, n_out)"""
        return float(0.5 * np.sum((sigmoid(z) - y) ** 2) / z.shape[0])

    @staticmethod
    def delta(z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∂C/∂z for the batch-mean cost, with σ'(z) = a(1 − a).  (B, n_out)"""
        return (a - y) * (a * (1.0 - a)) / z.shape[0]


class CrossEntropyCost:
    name = "cross-entropy"

    @staticmethod
    def activation(z: np.ndarray) -> np.ndarray:
        return softmax(z)

    @staticmethod
    def value(z: np.ndarray, y: np.ndarray) -> float:
        """Mean over the batch of −Σ y log softmax(z), from the logits (no log 0)."""
        return float(-np.sum(y * log_softmax(z)) / z.shape[0])

    @staticmethod
    def delta(z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∂C/∂z for the batch-mean cost: the σ'(z) factor cancels.  (B, n_out)"""
        return (a - y) / z.shape[0]


COSTS = {cost.name: cost for cost in (CrossEntropyCost, QuadraticCost)}
