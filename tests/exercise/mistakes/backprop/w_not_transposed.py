# kqv exercise: backprop
# expect: shapes | W instead of Wᵀ
# the mistake: δ sent back with W_{l+1}ᵀ (rows are samples)
# ruff: noqa: B905  (a learner's file: zip() without strict=)
"""Backpropagation in matrix form: the digits network of step 1, written by you.

Write the two methods that raise NotImplementedError: Network.backprop and Network.update_mini_batch.
Everything else is given. Check your work as often as you like; each check says what it expected, what
came back, and a hint when it recognises the mistake:

    kqv exercise check backprop.py

The network is Nielsen's (Neural Networks and Deep Learning, chapters 1 and 2) with one change: a whole
mini-batch goes through at once, one row per sample, so there is no Python loop over the samples.

Notation (rows are samples):
    B        the number of samples in the mini-batch
    n_l      the width of layer l; sizes = [n_0, n_1, ..., n_L] (n_0 inputs, n_L outputs)
    W_l      the weights of layer l, shape (n_l, n_{l-1}): W_l[j, k] links neuron k of layer l-1 to
             neuron j of layer l. self.weights[l - 1] is W_l (Python counts from 0, layers from 1)
    b_l      the biases of layer l, shape (n_l,); self.biases[l - 1] is b_l
    z_l      = a_{l-1} @ W_lᵀ + b_l, shape (B, n_l): the weighted inputs of layer l, one row per sample
    a_l      = σ(z_l), shape (B, n_l): its activations; a_0 = x, the inputs

The cost of one sample x with one-hot target y is the quadratic cost of chapter 1,
    C_x = ½ ‖a_L − y‖²,
and the cost of a mini-batch is the sum of its samples' costs, Σ_x C_x.

When every check passes, `python backprop.py` trains your network on kqv's embedded 8x8 digits.
"""

import numpy as np


def sigmoid(z):
    """σ(z) = 1 / (1 + e^(−z)), element-wise (written so that e^(−z) never overflows)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_prime(z):
    """σ'(z) = σ(z) (1 − σ(z)): the derivative of the sigmoid, element-wise."""
    s = sigmoid(z)
    return s * (1.0 - s)


class Network:
    def __init__(self, sizes, seed=0):
        """Network([64, 30, 10]): 64 inputs, a hidden layer of 30 sigmoid neurons, 10 outputs.

        W_l is drawn from N(0, 1/n_{l-1}) (so that z_l starts of order 1), b_l from N(0, 1)."""
        rng = np.random.default_rng(seed)
        self.sizes = list(sizes)
        self.num_layers = len(sizes) - 1  # L, the layers that have weights
        self.weights = [rng.standard_normal((n, m)) / np.sqrt(m) for m, n in zip(sizes[:-1], sizes[1:])]
        self.biases = [rng.standard_normal(n) for n in sizes[1:]]

    def feedforward(self, x):
        """The output activations a_L for a batch of inputs x: (B, n_0) -> (B, n_L)."""
        a = x
        for w, b in zip(self.weights, self.biases):
            a = sigmoid(a @ w.T + b)
        return a

    def backprop(self, x, y):
        """The gradient of the mini-batch's cost Σ_x C_x with respect to every bias and weight.

        x: (B, n_0), the inputs, one sample per row.
        y: (B, n_L), their one-hot targets.
        Returns (nabla_b, nabla_w), in that order (biases first), two lists of L arrays:
            nabla_b[l - 1] = ∂(Σ_x C_x)/∂b_l, shape (n_l,)          the shape of self.biases[l - 1]
            nabla_w[l - 1] = ∂(Σ_x C_x)/∂W_l, shape (n_l, n_{l-1})  the shape of self.weights[l - 1]
        These are sums over the B samples, not means: update_mini_batch divides by B.
        It only computes: self.weights and self.biases stay as they are.

        First a forward pass that keeps every z_l and a_l, then the four equations of backpropagation,
        with rows as samples (⊙ is the element-wise product, `*` in NumPy; @ the matrix product):
            δ_L = (a_L − y) ⊙ σ'(z_L)                    (B, n_L)   the output layer's error
            δ_l = (δ_{l+1} @ W_{l+1}) ⊙ σ'(z_l)           (B, n_l)   for l = L-1, ..., 1
            ∂(Σ_x C_x)/∂b_l = δ_l summed over the rows   (n_l,)
            ∂(Σ_x C_x)/∂W_l = δ_lᵀ @ a_{l-1}              (n_l, n_{l-1})
        """
        zs, activations = [], [x]  # zs[l - 1] = z_l, activations[l] = a_l
        a = x
        for w, b in zip(self.weights, self.biases):
            z = a @ w.T + b  # (B, n_{l-1}) @ (n_{l-1}, n_l) + (n_l,) -> (B, n_l)
            a = sigmoid(z)
            zs.append(z)
            activations.append(a)
        nabla_b = [None] * self.num_layers
        nabla_w = [None] * self.num_layers
        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])  # δ_L: (B, n_L)
        for l in range(self.num_layers, 0, -1):  # l = L, ..., 1
            nabla_b[l - 1] = delta.sum(axis=0)  # (n_l,)
            nabla_w[l - 1] = delta.T @ activations[l - 1]  # (n_l, B) @ (B, n_{l-1}) -> (n_l, n_{l-1})
            if l > 1:
                delta = (delta @ self.weights[l - 1].T) * sigmoid_prime(zs[l - 2])  # δ_{l-1}: (B, n_{l-1})
        return nabla_b, nabla_w

    def update_mini_batch(self, batch, eta):
        """One step of gradient descent on one mini-batch: changes self.weights and self.biases, returns None.

        batch: a pair (x, y): x of shape (B, n_0), y of shape (B, n_L), as backprop takes them.
        eta: the learning rate η.
        With backprop's sums, every parameter moves against the batch's mean gradient:
            W_l ← W_l − (η / B) nabla_w[l - 1]
            b_l ← b_l − (η / B) nabla_b[l - 1]
        """
        x, y = batch
        nabla_b, nabla_w = self.backprop(x, y)
        step = eta / len(x)  # η / B
        self.weights = [w - step * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - step * nb for b, nb in zip(self.biases, nabla_b)]

    def evaluate(self, x, labels):
        """The fraction of the inputs x: (N, n_0) whose most active output is their label (labels: (N,) ints)."""
        return float(np.mean(self.feedforward(x).argmax(axis=1) == labels))

    def sgd(self, x, labels, epochs, mini_batch_size, eta, test=None, seed=0):
        """Mini-batch stochastic gradient descent: each epoch shuffles the training set, cuts it into
        mini-batches and takes one update_mini_batch step per batch. test: (x, labels) to report on."""
        rng = np.random.default_rng(seed)
        y = np.eye(self.sizes[-1])[labels]  # (N, n_L) one-hot targets
        for epoch in range(1, epochs + 1):
            order = rng.permutation(len(x))
            for start in range(0, len(x), mini_batch_size):
                chosen = order[start : start + mini_batch_size]
                self.update_mini_batch((x[chosen], y[chosen]), eta)
            if test is not None:
                print(f"epoch {epoch:>2}: test accuracy {self.evaluate(*test):.3f}")


if __name__ == "__main__":
    # python backprop.py: Nielsen's settings of chapter 1 on the embedded 8x8 digits (a few seconds)
    from kqv.data.digits import load_digits_data

    data = load_digits_data()
    net = Network([64, 30, 10])
    net.sgd(data.train.x, data.train.labels, 30, 10, 3.0, test=(data.test.x, data.test.labels))
