"""Activation functions, written to stay finite for any finite input.

`sigmoid(z) = 1 / (1 + e^-z)` overflows `e^-z` for large negative z. With
e = e^-|z| ∈ (0, 1], σ(|z|) = 1/(1 + e) and σ(−|z|) = e/(1 + e): no exponent is
ever positive, and the result keeps full relative precision in both tails
(σ(−40) ≈ 4.2e-18, not 0). `softmax` subtracts the
row maximum before exponentiating, which leaves the result unchanged
(softmax is invariant to adding a constant to every logit) and keeps e^x ≤ 1.
"""

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^-z), element-wise, without overflow."""
    e = np.exp(-np.abs(z))  # (…), in (0, 1]
    s = 1.0 / (1.0 + e)  # σ(|z|)
    return np.where(z >= 0, s, e * s)


def sigmoid_prime(z: np.ndarray) -> np.ndarray:
    """σ'(z) = σ(z)(1 − σ(z)). Backprop uses the cached a = σ(z) instead: a(1 − a)."""
    s = sigmoid(z)
    return s * (1.0 - s)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax over the last axis: z − logsumexp(z). (B, n) -> (B, n)"""
    shifted = z - z.max(axis=-1, keepdims=True)  # (B, n), max of each row is 0
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    """softmax over the last axis; each row is a probability distribution. (B, n) -> (B, n)"""
    e = np.exp(z - z.max(axis=-1, keepdims=True))  # (B, n), entries in (0, 1]
    return e / e.sum(axis=-1, keepdims=True)
