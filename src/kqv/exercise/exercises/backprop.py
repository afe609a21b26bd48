"""Exercise `backprop`: the digits network's backpropagation in matrix form, and one step of SGD (step 1).

The learner writes Network.backprop(x, y) -> (nabla_b, nabla_w), the gradients of the quadratic cost summed
over a mini-batch (rows are samples), and Network.update_mini_batch((x, y), eta), one gradient step. The
checks compare them with kqv.scratch.network (whose backprop returns batch means: × B gives the sums),
with finite differences, and finally train the learner's network on the embedded 8×8 digits at the
textbook settings (Nielsen, chapter 1: one hidden layer of 30, mini-batches of 10, η = 3.0, 30 epochs).
"""

import numpy as np

from kqv.data.digits import load_embedded
from kqv.exercise.framework import Check, Failure, as_array, call, close, describe, expect_close, expect_shape
from kqv.scratch.functions import sigmoid, sigmoid_prime
from kqv.scratch.network import Network
from kqv.scratch.train import one_hot

NAME = "backprop"
STEP = "1. Digits"
TEACHES = "backpropagation in matrix form: a whole mini-batch's gradients at once, then one step of SGD"
FILENAME = "backprop.py"
SOLUTION = [
    "src/kqv/scratch/network.py: Network.forward, Network.backprop, Network.sgd_step",
    "src/kqv/scratch/costs.py: QuadraticCost.delta",
]

TEXTBOOK = {"hidden": 30, "epochs": 30, "mini_batch_size": 10, "eta": 3.0}  # Nielsen's chapter 1 settings
TARGET_ACCURACY = 0.95

TEMPLATE = '''\
# kqv exercise: backprop
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
@@BACKPROP@@
    def update_mini_batch(self, batch, eta):
        """One step of gradient descent on one mini-batch: changes self.weights and self.biases, returns None.

        batch: a pair (x, y): x of shape (B, n_0), y of shape (B, n_L), as backprop takes them.
        eta: the learning rate η.
        With backprop's sums, every parameter moves against the batch's mean gradient:
            W_l ← W_l − (η / B) nabla_w[l - 1]
            b_l ← b_l − (η / B) nabla_b[l - 1]
        """
@@UPDATE@@
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
'''

TODO_BACKPROP = """\
        # TODO: the forward pass, keeping every z_l and a_l; then δ_L and the loop back to layer 1
        raise NotImplementedError
"""
TODO_UPDATE = """\
        # TODO: x, y = batch; nabla_b, nabla_w = self.backprop(x, y); then move every W_l and b_l
        raise NotImplementedError
"""
SOLVED_BACKPROP = """\
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
                delta = (delta @ self.weights[l - 1]) * sigmoid_prime(zs[l - 2])  # δ_{l-1}: (B, n_{l-1})
        return nabla_b, nabla_w

"""
SOLVED_UPDATE = """\
        x, y = batch
        nabla_b, nabla_w = self.backprop(x, y)
        step = eta / len(x)  # η / B
        self.weights = [w - step * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - step * nb for b, nb in zip(self.biases, nabla_b)]

"""


def skeleton() -> str:
    return TEMPLATE.replace("@@BACKPROP@@\n", TODO_BACKPROP + "\n").replace("@@UPDATE@@\n", TODO_UPDATE + "\n")


def reference() -> str:
    return TEMPLATE.replace("@@BACKPROP@@\n", SOLVED_BACKPROP).replace("@@UPDATE@@\n", SOLVED_UPDATE)


# --- inputs and kqv's answers -------------------------------------------------------------------------------


def random_parameters(sizes: list[int], seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(weights, biases) as the skeleton draws them: W_l (n_l, n_{l-1}) ~ N(0, 1/n_{l-1}), b_l (n_l,) ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((n, m)) / np.sqrt(m) for m, n in zip(sizes[:-1], sizes[1:], strict=True)]
    return weights, [rng.standard_normal(n) for n in sizes[1:]]


def random_batch(sizes: list[int], batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x: (B, n_0) in [0, 1) and y: (B, n_L) one-hot targets."""
    rng = np.random.default_rng(seed + 1000)
    return rng.random((batch, sizes[0])), one_hot(rng.integers(0, sizes[-1], batch), sizes[-1])


def kqv_network(weights: list[np.ndarray], biases: list[np.ndarray]) -> Network:
    """kqv's own network (quadratic cost, sigmoid output) holding copies of these parameters."""
    net = Network([weights[0].shape[1], *(w.shape[0] for w in weights)], cost="quadratic", seed=None)
    net.weights = [w.copy() for w in weights]
    net.biases = [b.copy() for b in biases]
    return net


def reference_gradients(weights, biases, x, y) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """kqv's (nabla_b, nabla_w) as sums over the batch (kqv.scratch.network.backprop gives means)."""
    grads = kqv_network(weights, biases).backprop(x, y)
    return [g * len(x) for g in grads.biases], [g * len(x) for g in grads.weights]


def mistaken_gradients(weights, biases, x, y, mistake: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(nabla_b, nabla_w) as a learner who made one known `mistake` computes them (for recognising it).

    mistake: "sigma output" / "sigma hidden" / "sigma" (σ(z) for σ'(z) there, or everywhere), "prime of a"
    (σ'(a) for σ'(z)), "no output prime" (δ_L = a_L − y), "transposed W" (δ sent back with Wᵀ, square layers)."""
    a, activations, zs = x, [x], []
    for w, b in zip(weights, biases, strict=True):
        z = a @ w.T + b
        a = sigmoid(z)
        zs.append(z)
        activations.append(a)

    def prime(z, a, where: str):
        if mistake in ("sigma", f"sigma {where}"):
            return sigmoid(z)
        return sigmoid_prime(a) if mistake == "prime of a" else sigmoid_prime(z)

    delta = (a - y) * (1.0 if mistake == "no output prime" else prime(zs[-1], a, "output"))
    layers = len(weights)
    nabla_b, nabla_w = [None] * layers, [None] * layers
    for l in range(layers, 0, -1):
        nabla_b[l - 1], nabla_w[l - 1] = delta.sum(axis=0), delta.T @ activations[l - 1]
        if l > 1:
            w = weights[l - 1].T if mistake == "transposed W" else weights[l - 1]
            delta = (delta @ w) * prime(zs[l - 2], activations[l - 1], "hidden")
    return nabla_b, nabla_w


def summed_cost(weights, biases, x, y) -> float:
    """Σ_x ½‖a_L − y‖², by a forward pass of the checker's own."""
    a = x
    for w, b in zip(weights, biases, strict=True):
        a = sigmoid(a @ w.T + b)
    return float(0.5 * np.sum((a - y) ** 2))


def numerical_gradients(weights, biases, x, y, h: float = 1e-5):
    """(nabla_b, nabla_w) by central differences of summed_cost, one parameter at a time."""

    def derivative(param: np.ndarray) -> np.ndarray:
        grad = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            keep = param[index]
            param[index] = keep + h
            up = summed_cost(weights, biases, x, y)
            param[index] = keep - h
            down = summed_cost(weights, biases, x, y)
            param[index] = keep
            grad[index] = (up - down) / (2 * h)
        return grad

    weights, biases = [w.copy() for w in weights], [b.copy() for b in biases]
    return [derivative(b) for b in biases], [derivative(w) for w in weights]


# --- calling the learner's code -----------------------------------------------------------------------------


def learner_network(learner, weights, biases):
    """The learner's Network of these sizes, holding copies of these parameters."""
    sizes = [weights[0].shape[1], *(w.shape[0] for w in weights)]
    net = call(learner, "Network", sizes, learner_file=learner.__file__)
    net.weights = [w.copy() for w in weights]
    net.biases = [b.copy() for b in biases]
    return net


def shape_mismatch_hint(message: str) -> str:
    """A hint for an exception of the learner's that looks like two shapes that do not fit."""
    if any(s in message for s in ("matmul", "not aligned", "could not be broadcast", "shapes")):
        return (
            "two shapes do not fit: is δ sent back a layer with W instead of Wᵀ, or with the wrong layer's W? "
            "With rows as samples, δ_l = (δ_{l+1} @ W_{l+1}) ⊙ σ'(z_l): (B, n_{l+1}) @ (n_{l+1}, n_l) -> (B, n_l); "
            "and ∂C/∂W_l = δ_lᵀ @ a_{l-1}"
        )
    return ""


def learner_gradients(learner, net, x, y) -> tuple[list, list]:
    """net.backprop(x, y) -> (nabla_b, nabla_w) as two lists, after checking its form and that it changed nothing."""
    before = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    try:
        got = call(net, "backprop", x, y, learner_file=learner.__file__)
    except Failure as failure:
        failure.hint = failure.hint or shape_mismatch_hint(failure.message)
        raise
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise Failure(
            "backprop() should return a pair (nabla_b, nabla_w)", "a tuple of two lists", describe(got),
            "end backprop with `return nabla_b, nabla_w`",
        )  # fmt: skip
    layers = len(before[0])
    for what, part in zip(("nabla_b", "nabla_w"), got, strict=True):
        if not isinstance(part, tuple | list) or len(part) != layers:
            raise Failure(
                f"{what} should be a list of {layers} arrays, one per layer", f"a list of {layers} arrays",
                describe(part) if not isinstance(part, tuple | list) else f"a list of {len(part)}",
                "one entry per layer that has weights: L = len(sizes) - 1, the input layer has none",
            )  # fmt: skip
    moved = [i for i, (w, b) in enumerate(zip(before[0], before[1], strict=True))
             if not (close(net.weights[i], w, 0, 0) and close(net.biases[i], b, 0, 0))]  # fmt: skip
    if moved:
        raise Failure(
            f"backprop() changed self.weights or self.biases (layer {moved[0] + 1})", "the parameters unchanged",
            "changed", "backprop only computes the gradients; update_mini_batch is the one that changes the parameters",
        )  # fmt: skip
    return list(got[0]), list(got[1])


# --- recognising mistakes -----------------------------------------------------------------------------------


def all_close(got: list, expected: list, factor: float = 1.0, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    return len(got) == len(expected) and all(
        close(g, factor * e, rtol, atol) for g, e in zip(got, expected, strict=True)
    )


def gradient_hints(got, expected, variants, batch: int, layer: int, is_weight: bool, index: int, output_right: bool):
    """The (test, hint) pairs for one gradient array `got[1][index]` (layer `layer`) against `expected`."""
    got_all, expected_all = got[0] + got[1], expected[0] + expected[1]

    def variant_matches(*names):
        return lambda: any(n in variants and all_close(got_all, variants[n][0] + variants[n][1]) for n in names)

    hints = [
        (
            lambda: all_close(got_all, expected_all, -1.0),
            "every gradient has the opposite sign: the cost's derivative is ∂C_x/∂a_L = a_L − y, not y − a_L",
        ),
        (
            lambda: all_close(got_all, expected_all, 1.0 / batch),
            "your gradients are the batch's means; backprop "
            "returns the sums over the batch (update_mini_batch divides by B)",
        ),
        (
            variant_matches("sigma output"),
            "δ_L uses σ(z_L) where σ'(z_L) is needed: δ_L = (a_L − y) ⊙ σ'(z_L), "
            "σ'(z) = σ(z)(1 − σ(z)) is sigmoid_prime(z)",
        ),
        (
            variant_matches("sigma hidden"),
            "delta uses σ(z) where σ'(z) is needed in the hidden layers: "
            "δ_l = (δ_{l+1} @ W_{l+1}) ⊙ σ'(z_l), with sigmoid_prime(z_l)",
        ),
        (
            variant_matches("sigma"),
            "delta uses σ(z) where σ'(z) is needed (at every layer): σ'(z) = σ(z)(1 − σ(z)) is sigmoid_prime(z)",
        ),
        (
            variant_matches("prime of a"),
            "delta uses σ'(a) — sigmoid_prime of the activation — where σ'(z) is needed: "
            "sigmoid_prime(z), or a * (1 − a) with a = σ(z)",
        ),
        (
            variant_matches("no output prime"),
            "δ_L = a_L − y is the cross-entropy cost's delta; with the quadratic cost δ_L = (a_L − y) ⊙ σ'(z_L)",
        ),
        (
            variant_matches("transposed W"),
            "δ is sent back a layer with W instead of Wᵀ (in Nielsen's column form "
            "δ_l = (W_{l+1}ᵀ δ_{l+1}) ⊙ σ'(z_l); with rows as samples that is (δ_{l+1} @ W_{l+1}) ⊙ σ'(z_l))",
        ),
    ]
    if is_weight:
        hints.append((lambda: close(as_array(got[1][index]).T, expected[1][index]),
                      f"your dW for layer {layer} is the transpose of the expected one: ∂C/∂W_l = δ_lᵀ @ a_(l-1), "
                      f"shape (n_l, n_(l-1)) like W_l"))  # fmt: skip
    if output_right:
        hints.append((lambda: True, f"the output layer's gradients are right but layer {layer}'s are not: look at how "
                      f"δ is sent back from layer {layer + 1}: δ_l = (δ_(l+1) @ W_(l+1)) ⊙ σ'(z_l)"))  # fmt: skip
    return hints


def compare_gradients(got, expected, variants, batch: int, against: str, rtol=1e-5, atol=1e-8) -> None:
    """Layer by layer from the output back (an error in δ shows first where it is made): biases, then weights."""
    layers = len(expected[0])
    for layer in range(layers, 0, -1):
        output_right = layer < layers and close(got[0][-1], expected[0][-1]) and close(got[1][-1], expected[1][-1])
        for is_weight, name, symbol in ((False, "nabla_b", "b"), (True, "nabla_w", "W")):
            index = layer - 1
            hints = gradient_hints(got, expected, variants, batch, layer, is_weight, index, output_right)
            part = 1 if is_weight else 0
            what = f"{name}[{index}] (∂C/∂{symbol}_{layer}, layer {layer} of {layers}) {against}"
            expect_close(got[part][index], expected[part][index], what, hints, rtol=rtol, atol=atol)


# --- the checks ---------------------------------------------------------------------------------------------


def expect_layer_shapes(layer: int, got_b, got_w, w: np.ndarray, batch: int, swapped) -> None:
    n_out, n_in = w.shape
    shape_b, shape_w = (lambda: as_array(got_b).shape), (lambda: as_array(got_w).shape)
    expect_shape(got_b, (n_out,), f"nabla_b[{layer - 1}] (∂C/∂b_{layer})", [
        (swapped, "backprop returns (nabla_b, nabla_w), biases first; yours returns the weights' gradients first"),
        (lambda: shape_b() == (batch, n_out),
         "nabla_b keeps one row per sample: sum δ over the rows (the samples), delta.sum(axis=0)"),
        (lambda: shape_b() == (n_out, 1), "nabla_b is a column: make it (n_l,), like self.biases: delta.sum(axis=0)"),
    ])  # fmt: skip
    expect_shape(got_w, w.shape, f"nabla_w[{layer - 1}] (∂C/∂W_{layer})", [
        (lambda: shape_w() == (n_in, n_out),
         f"your dW for layer {layer} is the transpose of the expected one: ∂C/∂W_l = δ_lᵀ @ a_(l-1), "
         f"shape (n_l, n_(l-1)) = {w.shape} like W_l"),
    ])  # fmt: skip


def check_shapes(learner) -> None:
    sizes, batch = [3, 5, 4, 2], 2
    weights, biases = random_parameters(sizes, seed=1)
    x, y = random_batch(sizes, batch, seed=1)
    nabla_b, nabla_w = learner_gradients(learner, learner_network(learner, weights, biases), x, y)
    swapped = lambda: [as_array(g).shape for g in nabla_b] == [w.shape for w in weights]  # noqa: E731
    for layer, w in enumerate(weights, start=1):
        expect_layer_shapes(layer, nabla_b[layer - 1], nabla_w[layer - 1], w, batch, swapped)


def check_values(learner) -> None:
    # one network of different widths, one of equal widths (where W and Wᵀ, dW and dWᵀ have the same shape)
    for sizes, batch, seed in (([4, 5, 3, 2], 6, 2), ([4, 4, 4, 4], 3, 3)):
        weights, biases = random_parameters(sizes, seed)
        x, y = random_batch(sizes, batch, seed)
        got = learner_gradients(learner, learner_network(learner, weights, biases), x, y)
        expected = reference_gradients(weights, biases, x, y)
        variants = {}
        for mistake in ("sigma output", "sigma hidden", "sigma", "prime of a", "no output prime", "transposed W"):
            try:
                variants[mistake] = mistaken_gradients(weights, biases, x, y, mistake)
            except ValueError:  # a mistake whose shapes cannot fit this network
                continue
        compare_gradients(got, expected, variants, batch, f"for sizes {sizes}, B = {batch}")


def check_finite_differences(learner) -> None:
    sizes, batch = [3, 4, 3, 2], 3
    weights, biases = random_parameters(sizes, seed=4)
    x, y = random_batch(sizes, batch, seed=4)
    got = learner_gradients(learner, learner_network(learner, weights, biases), x, y)
    expected = numerical_gradients(weights, biases, x, y)
    compare_gradients(got, expected, {}, batch, "against finite differences of Σ_x C_x", rtol=1e-4, atol=1e-7)


def step_hint(got_steps: list[np.ndarray], expected_steps: list[np.ndarray], of: str, batch: int, eta: float) -> str:
    """What a step that is a multiple of the expected one (or zero) says about the update; "" if it is neither.

    of: whose step it is, "every parameter", "the weights" or "the biases"."""
    g = np.concatenate([np.ravel(s) for s in got_steps])
    e = np.concatenate([np.ravel(s) for s in expected_steps])
    if not np.isfinite(g).all():
        return ""
    if not np.any(g):
        if of == "every parameter":
            return "neither the weights nor the biases moved: assign the new values to self.weights and self.biases"
        other = "weights" if of == "the biases" else "biases"
        return (
            f"{of} did not move: update them as the {other}: W_l ← W_l − (η/B) nabla_w[l-1], "
            "b_l ← b_l − (η/B) nabla_b[l-1]"
        )
    ratio = float(g @ e / (e @ e))
    if not np.allclose(g, ratio * e, rtol=1e-5, atol=1e-10):
        return ""
    known = [
        (batch, f"the step of {of} is B = {batch} times too big: divide backprop's sums by the batch size B = len(x)"),
        (batch / 2, f"the step of {of} is divided by 2, not by the batch size B = {batch}: len(batch) is 2 because "
         "batch is the pair (x, y); B is len(x)"),
        (1 / batch, f"the step of {of} is B = {batch} times too small: backprop already returns sums, so divide by B "
         "once (not twice)"),
        (eta, f"the step of {of} is η = {eta:g} times too big: η is applied twice"),
        (1 / eta, f"the step of {of} is missing η: W_l ← W_l − (η/B) nabla_w[l-1]"),
        (-1.0, f"the step of {of} goes uphill: subtract the gradient (W ← W − (η/B) nabla_w), do not add it"),
    ]  # fmt: skip
    for factor, text in known:
        if abs(ratio - factor) <= 1e-6 * abs(factor):
            return text
    return f"the step of {of} is {ratio:.4g} times the expected one: W_l ← W_l − (η/B) nabla_w[l-1] with η = {eta:g}"


BACKPROP_FIRST = (
    "update_mini_batch steps along backprop's gradients, and those are not right yet: make `values` pass first"
)


def backprop_differs(learner) -> bool:
    """Whether the learner's backprop fails the `values` check (then the update and training fail with it)."""
    try:
        check_values(learner)
    except Exception:  # Failure, NotImplementedYet, or a crash: not right in any case
        return True
    return False


def check_update(learner) -> None:
    sizes, batch, eta = [4, 5, 3], 5, 3.0
    weights, biases = random_parameters(sizes, seed=5)
    x, y = random_batch(sizes, batch, seed=5)
    net = learner_network(learner, weights, biases)
    returned = call(net, "update_mini_batch", (x.copy(), y.copy()), eta, learner_file=learner.__file__)
    reference = kqv_network(weights, biases)
    reference.sgd_step(x, y, eta)
    parts = (("self.weights", net.weights, weights, reference.weights, "the weights"),
             ("self.biases", net.biases, biases, reference.biases, "the biases"))  # fmt: skip
    for what, got, before, _, _ in parts:
        if not isinstance(got, list | tuple) or len(got) != len(before):
            raise Failure(
                f"after update_mini_batch, {what} is not a list of {len(before)} arrays", f"a list of {len(before)}",
                describe(got), f"assign a list to {what}, one array per layer",
            )  # fmt: skip
        for i, (g, b) in enumerate(zip(got, before, strict=True)):
            expect_shape(g, b.shape, f"{what}[{i}] after update_mini_batch")
    got_steps = [[as_array(g) - b for g, b in zip(got, before, strict=True)] for _, got, before, _, _ in parts]
    expected_steps = [[e - b for e, b in zip(exp, before, strict=True)] for _, _, before, exp, _ in parts]
    if returned is not None and not any(np.any(s) for steps in got_steps for s in steps):
        raise Failure(
            "update_mini_batch returned something and left self.weights and self.biases as they were",
            "the parameters changed, None returned", f"a {type(returned).__name__} returned, the parameters unchanged",
            "assign the new values (self.weights = [...], self.biases = [...]) instead of returning them",
        )  # fmt: skip
    every = step_hint(got_steps[0] + got_steps[1], expected_steps[0] + expected_steps[1], "every parameter", batch, eta)
    wrong_backprop = backprop_differs(learner)
    for (what, got, _, expected, of), steps, wanted in zip(parts, got_steps, expected_steps, strict=True):
        own = step_hint(steps, wanted, of, batch, eta)
        hints = [
            (lambda: bool(every), every),
            (lambda own=own: bool(own), own),
            (lambda: wrong_backprop, BACKPROP_FIRST),
        ]
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            expect_close(g, e, f"{what}[{i}] after one update_mini_batch((x, y), η = {eta:g}) with B = {batch}", hints)


def check_end_to_end(learner) -> None:
    data = load_embedded()
    sizes = [data.num_inputs, TEXTBOOK["hidden"], data.num_classes]
    weights, biases = random_parameters(sizes, seed=0)
    net = learner_network(learner, weights, biases)
    x, y = data.train.x, one_hot(data.train.labels, data.num_classes)
    rng = np.random.default_rng(0)
    size, eta, epochs = TEXTBOOK["mini_batch_size"], TEXTBOOK["eta"], TEXTBOOK["epochs"]
    accuracies = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), size):
            chosen = order[start : start + size]  # the last batch of each epoch has 1258 % 10 = 8 samples
            call(net, "update_mini_batch", (x[chosen], y[chosen]), eta, learner_file=learner.__file__)
        a = data.test.x
        for w, b in zip(net.weights, net.biases, strict=True):
            a = sigmoid(a @ as_array(w).T + as_array(b))
        accuracies.append(float(np.mean(a.argmax(axis=1) == data.test.labels)))
    if accuracies[-1] >= TARGET_ACCURACY:
        return
    finite = all(np.isfinite(as_array(w)).all() for w in net.weights)
    trail = ", ".join(f"{a:.2f}" for a in accuracies[:: max(1, epochs // 6)])
    raise Failure(
        f"after {epochs} epochs on the embedded digits (sizes {sizes}, mini-batches of {size}, η = {eta:g}) the "
        f"test accuracy is {accuracies[-1]:.3f}",
        f"at least {TARGET_ACCURACY:.2f}", f"{accuracies[-1]:.3f} (epoch by epoch: {trail}, …)",
        BACKPROP_FIRST if backprop_differs(learner) else
        "the weights became NaN or inf: is the step far too big?" if not finite else
        "the network does not learn: does update_mini_batch use its batch and change self.weights and self.biases?"
        if accuracies[-1] < 0.2 else "it learns, but not well enough: compare your update with the textbook's",
    )  # fmt: skip


CHECKS = [
    Check("shapes", "backprop's gradients have the parameters' shapes, on one tiny batch", check_shapes),
    Check("values", "backprop's gradients equal kqv's on random networks and batches", check_values),
    Check(
        "finite differences",
        "backprop's gradients equal the numerical derivatives of Σ_x C_x",
        check_finite_differences,
    ),  # fmt: skip
    Check("update", "one update_mini_batch step moves every parameter as kqv's SGD step does", check_update),
    Check(
        "end to end",
        f"update_mini_batch trains the digits network to ≥ {TARGET_ACCURACY:.0%} test accuracy "
        f"at the textbook settings",
        check_end_to_end,
        slow=True,
    ),  # fmt: skip
]
