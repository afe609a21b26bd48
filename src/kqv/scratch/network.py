"""A fully connected feed-forward network with backpropagation written by hand.

The network of Nielsen's *Neural Networks and Deep Learning* (chapters 1–3), in
matrix form: a whole mini-batch goes forward and backward as one matrix per
layer, with no Python loop over samples.

Notation (rows are samples):
    B       mini-batch size
    n_l     width of layer l (n_0 = inputs, n_L = classes)
    W_l     weights of layer l, (n_l, n_{l-1}), as in Nielsen: W_l[j, k] links
            neuron k of layer l-1 to neuron j of layer l
    b_l     biases of layer l, (n_l,)
    z_l     weighted input of layer l, (B, n_l)
    a_l     activation of layer l, (B, n_l); a_0 is the input X

Cost of a mini-batch of B samples out of a training set of n:
    C = (1/B) Σ_x C_x  +  (λ / 2n) Σ_l ‖W_l‖²
so a plain gradient step W ← W − η ∂C/∂W is Nielsen's update
    W ← (1 − ηλ/n) W − (η/B) Σ_x ∂C_x/∂W.
Biases are not regularised.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kqv.scratch.costs import COSTS
from kqv.scratch.functions import sigmoid


@dataclass
class ForwardPass:
    """Everything backprop needs: z_l for l = 1..L and a_l for l = 0..L."""

    zs: list[np.ndarray]  # L arrays, zs[l-1] = z_l: (B, n_l)
    activations: list[np.ndarray]  # L + 1 arrays, activations[l] = a_l: (B, n_l)

    @property
    def output(self) -> np.ndarray:
        return self.activations[-1]  # (B, n_L)


@dataclass
class Gradients:
    """∂C/∂W_l and ∂C/∂b_l, each the shape of the parameter it belongs to."""

    weights: list[np.ndarray]  # weights[l-1]: (n_l, n_{l-1})
    biases: list[np.ndarray]  # biases[l-1]: (n_l,)
    cost: float | None = None  # the batch's data cost (no L2), when asked for


class Network:
    """`Network([64, 100, 10])`: 64 inputs, one sigmoid hidden layer of 100, 10 outputs.

    >>> net = Network([4, 3, 2], seed=0)
    >>> net.feedforward(np.zeros((5, 4))).shape   # 5 samples in, 5 distributions out
    (5, 2)
    """

    def __init__(
        self,
        sizes: Sequence[int],
        cost: str = "cross-entropy",
        seed: int | None = 0,
        dtype: type = np.float64,
    ) -> None:
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2:
            raise ValueError(f"a network needs at least an input and an output layer, got {sizes}")
        if any(n < 1 for n in sizes):
            raise ValueError(f"every layer needs at least one neuron, got sizes {sizes}")
        if cost not in COSTS:
            raise ValueError(f"unknown cost {cost!r}; choose one of {sorted(COSTS)}")
        self.sizes = sizes
        self.cost = COSTS[cost]
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        # Gaussian weights with standard deviation 1/sqrt(fan_in) keep each z_l of
        # order 1 at the start, so the sigmoids are not saturated; biases N(0, 1).
        self.weights = [
            (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(self.dtype)
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        ]  # W_l: (n_l, n_{l-1})
        self.biases = [rng.standard_normal(n_out).astype(self.dtype) for n_out in sizes[1:]]

    @property
    def num_layers(self) -> int:
        """Number of weight layers L (the input layer has no weights)."""
        return len(self.weights)

    @property
    def num_parameters(self) -> int:
        return sum(w.size + b.size for w, b in zip(self.weights, self.biases, strict=True))

    def forward(self, x: np.ndarray) -> ForwardPass:
        """Run a batch forward, keeping every z_l and a_l.  x: (B, n_0)"""
        a = np.asarray(x, dtype=self.dtype)  # a_0: (B, n_0)
        zs, activations = [], [a]
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True), start=1):
            z = a @ w.T + b  # (B, n_{l-1}) @ (n_{l-1}, n_l) + (n_l,) -> (B, n_l)
            # hidden layers are sigmoid; the output layer uses the cost's activation
            a = self.cost.activation(z) if layer == self.num_layers else sigmoid(z)  # (B, n_l)
            zs.append(z)
            activations.append(a)
        return ForwardPass(zs, activations)

    def feedforward(self, x: np.ndarray) -> np.ndarray:
        """Output activations for a batch: (B, n_0) -> (B, n_L).

        With the cross-entropy cost each row is a probability distribution.
        """
        return self.forward(x).output

    def predict(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Most likely class of each sample: (N, n_0) -> (N,)."""
        return np.concatenate(
            [self.feedforward(x[i : i + batch_size]).argmax(axis=1) for i in range(0, len(x), batch_size)]
        )

    def total_cost(self, x: np.ndarray, y: np.ndarray, lmbda: float = 0.0, n: int | None = None) -> float:
        """C for inputs x: (B, n_0) and one-hot targets y: (B, n_L), with L2 over n samples."""
        z_out = self.forward(x).zs[-1]  # (B, n_L)
        l2 = 0.5 * lmbda / (n or len(x)) * sum(float(np.sum(w * w)) for w in self.weights)
        return self.cost.value(z_out, y) + l2

    def backprop(
        self, x: np.ndarray, y: np.ndarray, lmbda: float = 0.0, n: int | None = None, with_cost: bool = False
    ) -> Gradients:
        """∂C/∂W_l and ∂C/∂b_l for the whole batch at once.

        x: (B, n_0) inputs, y: (B, n_L) one-hot targets, n: training-set size for L2
        (defaults to B). The four equations of backpropagation, in matrix form:
            δ_L = ∂C/∂z_L                                   (B, n_L)
            δ_l = (δ_{l+1} @ W_{l+1}) ⊙ σ'(z_l)             (B, n_l), σ'(z_l) = a_l(1 − a_l)
            ∂C/∂b_l = Σ_rows δ_l                            (n_l,)
            ∂C/∂W_l = δ_lᵀ @ a_{l-1}  (+ λ/n · W_l)          (n_l, n_{l-1})
        δ carries the 1/B of the batch mean, so the sums over rows are means.
        """
        y = np.asarray(y, dtype=self.dtype)
        fwd = self.forward(x)
        grad_w = [np.empty_like(w) for w in self.weights]
        grad_b = [np.empty_like(b) for b in self.biases]

        delta = self.cost.delta(fwd.zs[-1], fwd.output, y)  # δ_L: (B, n_L)
        for l in range(self.num_layers, 0, -1):  # l = L, …, 1; list index l-1
            a_prev = fwd.activations[l - 1]  # a_{l-1}: (B, n_{l-1})
            grad_w[l - 1] = delta.T @ a_prev  # (n_l, B) @ (B, n_{l-1}) -> (n_l, n_{l-1})
            grad_b[l - 1] = delta.sum(axis=0)  # (n_l,)
            if l > 1:
                # (B, n_l) @ (n_l, n_{l-1}) -> (B, n_{l-1}), times σ'(z_{l-1}) = a_{l-1}(1 − a_{l-1})
                delta = (delta @ self.weights[l - 1]) * (a_prev * (1.0 - a_prev))

        if lmbda:
            decay = lmbda / (n or len(x))
            grad_w = [g + decay * w for g, w in zip(grad_w, self.weights, strict=True)]
        return Gradients(grad_w, grad_b, self.cost.value(fwd.zs[-1], y) if with_cost else None)

    def sgd_step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        eta: float,
        lmbda: float = 0.0,
        n: int | None = None,
        with_cost: bool = False,
    ) -> float | None:
        """One step of gradient descent on a mini-batch, θ ← θ − η ∂C/∂θ; returns the batch cost if asked."""
        grads = self.backprop(x, y, 0.0, None, with_cost)  # data term only; L2 as weight decay:
        keep = 1.0 - eta * lmbda / (n or len(x))  # W ← (1 − ηλ/n) W − η ∂C_data/∂W
        for w, g in zip(self.weights, grads.weights, strict=True):
            if lmbda:
                w *= keep
            w -= eta * g
        for b, g in zip(self.biases, grads.biases, strict=True):
            b -= eta * g
        return grads.cost

    def parameters(self) -> dict[str, np.ndarray]:
        """Named parameters, the names used in checkpoints."""
        named = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            named[f"layers.{i}.weight"] = w
            named[f"layers.{i}.bias"] = b
        return named

    def load_parameters(self, named: dict[str, np.ndarray]) -> None:
        """Copy parameters in by name, checking that every name and shape matches."""
        expected = self.parameters()
        missing, unexpected = expected.keys() - named.keys(), named.keys() - expected.keys()
        if missing or unexpected:
            raise ValueError(f"parameter names differ: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for name, target in expected.items():
            if named[name].shape != target.shape:
                raise ValueError(f"{name}: expected shape {target.shape}, got {named[name].shape}")
            target[...] = named[name]
