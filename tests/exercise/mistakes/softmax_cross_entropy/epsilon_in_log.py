# kqv exercise: softmax-cross-entropy
# expect: huge logits | the loss is capped
# the mistake: cross_entropy takes np.log(softmax(z) + 1e-12)
# ruff: noqa: B905  (a learner's file: zip() without strict=)
"""Softmax and cross-entropy: a classifier's output layer, and the gradient that makes them a pair.

Write the three functions that raise NotImplementedError, in NumPy. Check your work as often as you like;
each check says what it expected, what came back, and a hint when it recognises the mistake:

    kqv exercise check softmax_cross_entropy.py

A classifier's last layer gives each of K classes a score, its logit. softmax turns a row of logits into
probabilities; cross-entropy scores them against the true class (−log of the probability it was given);
and the gradient of cross-entropy with respect to the logits comes out as simply "the probabilities minus
the one-hot target" (divided by B, since the loss is a mean over the batch).

Notation:
    B          the number of samples, one per row
    K          the number of classes, one per column
    z          the logits, shape (B, K): z[i, j] is the score of class j for sample i
    labels     the true classes, shape (B,), integers in 0 ... K-1
    one_hot    shape (B, K): one_hot[i, labels[i]] = 1, every other entry 0

Watch the numbers: logits of 1000 are not unusual after one bad step, and e^1000 overflows to inf in
float64 (inf / inf is NaN). Softmax does not change when the same number is subtracted from every logit
of a row, so subtract each row's max first: then every exponent is ≤ 0 and the largest term is e^0 = 1.
"""

import numpy as np


def softmax(z):
    """The probabilities of each row: softmax(z)[i, j] = e^(z[i, j]) / Σ_k e^(z[i, k]).

    z: (B, K) logits.
    Returns (B, K), the shape of z: every entry ≥ 0 and every row summing to 1.
    Stable for any finite z (subtract each row's max first); z itself is left unchanged.
    """
    e = np.exp(z - z.max(axis=-1, keepdims=True))  # (B, K), every entry in (0, 1]
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy(z, labels):
    """The cross-entropy loss: the mean over the batch of −log softmax(z)[i, labels[i]].

    z: (B, K) logits. labels: (B,) integers in 0 ... K-1.
    Returns one number (a float): the mean over the B rows, not their sum.
    Finite for any finite z: compute log softmax directly,
        log softmax(z)[i, j] = (z[i, j] − m_i) − log Σ_k e^(z[i, k] − m_i),   m_i = the max of row i,
    rather than np.log(softmax(z)), which is log 0 = −inf once a probability underflows to 0.
    """
    log_probs = np.log(softmax(z) + 1e-12)
    return float(-log_probs[np.arange(len(z)), labels].mean())


def cross_entropy_gradient(z, labels):
    """The gradient of cross_entropy(z, labels) with respect to the logits z.

    z: (B, K) logits. labels: (B,) integers in 0 ... K-1.
    Returns (B, K): (softmax(z) − one_hot(labels)) / B. Each row is that sample's probabilities minus its
    one-hot target, divided by B because the loss is the mean over the B rows.
    """
    grad = softmax(z)  # (B, K)
    grad[np.arange(len(z)), labels] -= 1.0  # softmax − one-hot
    return grad / len(z)
