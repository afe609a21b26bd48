"""Exercise `softmax-cross-entropy`: a stable softmax, the cross-entropy loss and its gradient (step 1).

The learner writes softmax(z), cross_entropy(z, labels) (the batch mean of −log p of the true class) and
cross_entropy_gradient(z, labels) = (softmax(z) − one_hot(labels)) / B, in NumPy. The checks go from shapes
and rows that sum to 1, through values against kqv.scratch (functions.softmax, costs.CrossEntropyCost), to
logits of ±1000 (no overflow, no log 0), the gradient one row at a time, against finite differences of the
learner's own loss, and the batch mean that the docstrings ask for.
"""

import numpy as np

from kqv.exercise.framework import Check, Failure, as_array, call, close, expect_close, expect_shape
from kqv.scratch.costs import CrossEntropyCost
from kqv.scratch.functions import softmax
from kqv.scratch.train import one_hot

NAME = "softmax-cross-entropy"
STEP = "1. Digits"
TEACHES = "a softmax that never overflows, cross-entropy from the logits, and its gradient: softmax − one-hot"
FILENAME = "softmax_cross_entropy.py"
SOLUTION = [
    "src/kqv/scratch/functions.py: softmax, log_softmax",
    "src/kqv/scratch/costs.py: CrossEntropyCost.value, CrossEntropyCost.delta",
]

OVERFLOW = (
    "e^1000 overflows to inf (and inf / inf is NaN): subtract each row's max before exponentiating; "
    "softmax(z) = softmax(z − max_j z_j), and then every exponent is ≤ 0"
)

TEMPLATE = '''\
# kqv exercise: softmax-cross-entropy
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
@@SOFTMAX@@


def cross_entropy(z, labels):
    """The cross-entropy loss: the mean over the batch of −log softmax(z)[i, labels[i]].

    z: (B, K) logits. labels: (B,) integers in 0 ... K-1.
    Returns one number (a float): the mean over the B rows, not their sum.
    Finite for any finite z: compute log softmax directly,
        log softmax(z)[i, j] = (z[i, j] − m_i) − log Σ_k e^(z[i, k] − m_i),   m_i = the max of row i,
    rather than np.log(softmax(z)), which is log 0 = −inf once a probability underflows to 0.
    """
@@LOSS@@


def cross_entropy_gradient(z, labels):
    """The gradient of cross_entropy(z, labels) with respect to the logits z.

    z: (B, K) logits. labels: (B,) integers in 0 ... K-1.
    Returns (B, K): (softmax(z) − one_hot(labels)) / B. Each row is that sample's probabilities minus its
    one-hot target, divided by B because the loss is the mean over the B rows.
    """
@@GRADIENT@@
'''

TODO = {
    "@@SOFTMAX@@": "    raise NotImplementedError\n",
    "@@LOSS@@": "    raise NotImplementedError\n",
    "@@GRADIENT@@": "    raise NotImplementedError\n",
}
SOLVED = {
    "@@SOFTMAX@@": """\
    e = np.exp(z - z.max(axis=-1, keepdims=True))  # (B, K), every entry in (0, 1]
    return e / e.sum(axis=-1, keepdims=True)
""",
    "@@LOSS@@": """\
    shifted = z - z.max(axis=-1, keepdims=True)  # (B, K), each row's max is 0
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # log softmax(z), (B, K)
    return float(-log_probs[np.arange(len(z)), labels].mean())
""",
    "@@GRADIENT@@": """\
    grad = softmax(z)  # (B, K)
    grad[np.arange(len(z)), labels] -= 1.0  # softmax − one-hot
    return grad / len(z)
""",
}


def _fill(parts: dict[str, str]) -> str:
    text = TEMPLATE
    for marker, body in parts.items():
        text = text.replace(f"{marker}\n", body)
    return text


def skeleton() -> str:
    return _fill(TODO)


def reference() -> str:
    return _fill(SOLVED)


# --- kqv's answers, and the ones of known mistakes ----------------------------------------------------------


def reference_loss(z: np.ndarray, labels: np.ndarray) -> float:
    return CrossEntropyCost.value(z, one_hot(labels, z.shape[-1]))


def reference_gradient(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return CrossEntropyCost.delta(z, softmax(z), one_hot(labels, z.shape[-1]))


def logits(batch: int, classes: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random logits (B, K) of about `scale` and random labels (B,)."""
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((batch, classes)), rng.integers(0, classes, batch)


def rows(z: np.ndarray) -> list[np.ndarray]:
    return [z[i : i + 1] for i in range(len(z))]


def with_fresh(learner, name: str, z: np.ndarray, *args):
    """learner.name(copy of z, *args), failing if it changed the copy (z -= … changes the caller's array)."""
    given = z.copy()
    got = call(learner, name, given, *args, learner_file=learner.__file__)
    if not np.array_equal(given, z):
        raise Failure(
            f"{name}() changed its input z in place", "z unchanged", "z changed",
            "z -= z.max(...) changes the caller's logits: write shifted = z - z.max(axis=-1, keepdims=True) instead",
        )  # fmt: skip
    return got


# --- the checks ---------------------------------------------------------------------------------------------


def check_shapes(learner) -> None:
    z, labels = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]), np.array([2, 0])
    p = call(learner, "softmax", z.copy(), learner_file=learner.__file__)
    expect_shape(p, z.shape, "softmax(z) for z of shape (2, 3)", [
        (lambda: as_array(p).shape in ((2,), (2, 1)),
         "softmax gives every class its probability, (B, K): is this the row sums Σ_k e^z alone?"),
    ])  # fmt: skip
    loss = call(learner, "cross_entropy", z.copy(), labels, learner_file=learner.__file__)
    expect_shape(loss, (), "cross_entropy(z, labels)", [
        (lambda: as_array(loss).shape == (2,), "cross_entropy returns one number, the mean over the batch, not one "
         "loss per row: end with .mean()"),
    ])  # fmt: skip
    grad = call(learner, "cross_entropy_gradient", z.copy(), labels, learner_file=learner.__file__)
    expect_shape(grad, z.shape, "cross_entropy_gradient(z, labels)", [
        (lambda: as_array(grad).shape == (2,), "the gradient has one entry per logit, (B, K), like z"),
    ])  # fmt: skip


def check_rows_sum_to_one(learner) -> None:
    z, _ = logits(4, 5, 3.0, seed=1)
    p = as_array(call(learner, "softmax", z.copy(), learner_file=learner.__file__))
    expect_shape(p, z.shape, "softmax(z) for z of shape (4, 5)")
    if (p < 0).any():
        index = tuple(int(i) for i in np.argwhere(p < 0)[0])
        raise Failure(
            f"softmax(z) has a negative entry at index {index}", "every entry ≥ 0", f"{p[index]:.6g}",
            "probabilities are e^z / Σ e^z, never negative: exponentiate before dividing",
        )  # fmt: skip
    expect_close(p.sum(axis=-1), np.ones(len(z)), "the sum of each row of softmax(z)", [
        (lambda: np.allclose(p.sum(axis=0), 1.0), "softmax is taken over the wrong axis: each row (axis=-1) must "
         "sum to 1, yours makes each column (axis=0) do so; sum with axis=-1, keepdims=True"),
        (lambda: np.isclose(p.sum(), 1.0), "softmax normalises over the whole array: divide each row by its own "
         "sum, e.sum(axis=-1, keepdims=True)"),
    ])  # fmt: skip


def check_softmax_values(learner) -> None:
    for batch, classes, scale, seed in ((1, 1, 1.0, 2), (3, 7, 1.0, 3), (6, 10, 5.0, 4), (2, 4, 0.1, 5)):
        z, _ = logits(batch, classes, scale, seed)
        z = z + 20.0 * seed  # logits far from 0 (still small enough for a naive e^z)
        got = with_fresh(learner, "softmax", z)
        e = np.exp(z - z.max())
        expect_close(got, softmax(z), f"softmax(z) for z of shape {z.shape}", [
            (lambda got=got, e=e: close(got, e / e.sum(axis=0, keepdims=True)),
             "softmax is taken over the wrong axis: normalise each row (axis=-1), not each column"),
            (lambda got=got, z=z: close(got, softmax(-z)), "this is softmax(−z): e^(z), not e^(−z)"),
            (lambda got=got, z=z: close(got, z / z.sum(axis=-1, keepdims=True)),
             "divide e^z, not z itself, by the row's sum"),
            (lambda got=got, z=z: close(got, np.exp(z)) or close(got, np.exp(z - z.max(axis=-1, keepdims=True))),
             "these are the e^z, not yet divided by their row's sum"),
        ])  # fmt: skip


def loss_hints(got, z, labels, per_row: bool):
    """Known mistakes of a cross-entropy, got (one value per row when per_row) against z, labels."""
    log_p = z - z.max(axis=-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=-1, keepdims=True))
    picked, predicted = log_p[np.arange(len(z)), labels], log_p.max(axis=-1)
    value = (lambda v: v) if per_row else (lambda v: v.mean())
    return [
        (lambda: close(got, value(picked)), "cross-entropy is −log p of the true class: yours has the opposite sign"),
        (lambda: close(got, value(-predicted)) and not close(got, value(-picked)),
         "this is −log p of the predicted class (the row's max), not of the true class labels[i]"),
        (lambda: close(got, value(-picked / np.log(2))) or close(got, value(-picked / np.log(10))),
         "use the natural logarithm, np.log, not log2 or log10"),
        (lambda: close(got, value(-z[np.arange(len(z)), labels])),
         "this is −z[i, labels[i]], the logit; the loss is −log of its probability, softmax(z)[i, labels[i]]"),
    ]  # fmt: skip


def check_loss_values(learner) -> None:
    z, labels = logits(6, 5, 3.0, seed=6)
    got = [call(learner, "cross_entropy", row.copy(), labels[i : i + 1], learner_file=learner.__file__)
           for i, row in enumerate(rows(z))]  # fmt: skip
    for g in got:
        expect_shape(g, (), "cross_entropy(z, labels) for a batch of one row")
    got = np.array([float(as_array(g)) for g in got])
    expected = np.array([reference_loss(row, labels[i : i + 1]) for i, row in enumerate(rows(z))])
    expect_close(got, expected, "cross_entropy of each of 6 rows, one row at a time", loss_hints(got, z, labels, True))


def check_huge_logits(learner) -> None:
    z = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 999.0], [-1000.0, -1000.0, -1001.0]])
    p = as_array(with_fresh(learner, "softmax", z))

    def row_bad(i: int) -> bool:
        return p is not None and p.shape == z.shape and not np.isfinite(p[i]).all()

    overflow = OVERFLOW
    expect_close(p, softmax(z), "softmax(z) for logits of ±1000 (z = [[1000, 0, −1000], [1000, 1000, 999], "
                 "[−1000, −1000, −1001]])", [
        (lambda: row_bad(1), overflow),
        (lambda: row_bad(2) and not row_bad(1), "row 2 (all near −1000) is NaN: you subtract the max of the whole "
         "array, not of each row, so every e^(z − max) of that row underflows to 0 and 0 / 0 is NaN; use "
         "z.max(axis=-1, keepdims=True)"),
    ])  # fmt: skip
    for logit_row, label, expected in (([0.0, 1000.0], 0, 1000.0), ([1000.0, 0.0], 0, 0.0), ([-1000.0, 0.0], 1, 0.0)):
        zz = np.array([logit_row])
        loss = call(learner, "cross_entropy", zz.copy(), np.array([label]), learner_file=learner.__file__)
        value = as_array(loss)
        expect_close(loss, expected, f"cross_entropy({zz.tolist()}, [{label}])", [
            (lambda v=value: v is not None and not np.isfinite(v).all() and not np.isnan(v).any(),
             "the loss is inf: np.log(softmax(z)) is log 0 = −inf once the label's probability underflows to 0 "
             "(here e^−1000); compute log softmax directly, (z − m) − log Σ e^(z − m) with m the row's max"),
            (lambda v=value: v is not None and np.isnan(v).any(), overflow),
            (lambda v=value, e=expected: v is not None and np.isfinite(v).all() and e > 100 and float(v) < 0.9 * e,
             "the loss is capped: adding ε (or clipping) inside the log hides log 0 but cannot give −log e^−1000 = "
             "1000; compute log softmax directly, (z − m) − log Σ e^(z − m)"),
        ])  # fmt: skip
    zz, labels = np.array([[0.0, 1000.0], [1000.0, 1000.0]]), np.array([0, 1])
    grad = as_array(call(learner, "cross_entropy_gradient", zz.copy(), labels, learner_file=learner.__file__))
    expect_shape(grad, zz.shape, "cross_entropy_gradient([[0, 1000], [1000, 1000]], [0, 1])")
    if not np.isfinite(grad).all():  # its values are the `gradient` check's business; here only: finite
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(grad))[0])
        raise Failure(
            f"cross_entropy_gradient([[0, 1000], [1000, 1000]], [0, 1]) holds NaN or inf (first at index {index})",
            "finite values", f"{grad[index]}", overflow,
        )  # fmt: skip


def gradient_hints(got, z, labels, batch: int):
    p, target = softmax(z), one_hot(labels, z.shape[-1])
    predicted = one_hot(p.argmax(axis=-1), z.shape[-1])
    return [
        (lambda: as_array(got) is not None and not np.isfinite(as_array(got)).all(), OVERFLOW),
        (lambda: close(got, p / batch) or close(got, p), "the one-hot is missing: the gradient is "
         "softmax(z) − one_hot(labels), divided by B"),
        (lambda: close(got, (target - p) / batch) or close(got, target - p), "the gradient has the opposite sign: "
         "softmax − one-hot, not one-hot − softmax (the loss is −log p)"),
        (lambda: close(got, (p - predicted) / batch) and not close(got, (p - target) / batch),
         "the 1 is subtracted at the predicted class (argmax), not at the true class labels[i]"),
        (lambda: close(got, -target / batch) or close(got, -target),
         "only the one-hot part: the gradient is softmax(z) − one_hot(labels), the probabilities too"),
    ]  # fmt: skip


def check_gradient(learner) -> None:
    z, labels = logits(5, 4, 2.0, seed=7)
    z, labels = np.vstack([z, [[0.0, 1000.0, -1000.0, 3.0]]]), np.append(labels, 0)  # and one row of huge logits
    for i, row in enumerate(rows(z)):
        label = labels[i : i + 1]
        got = with_fresh(learner, "cross_entropy_gradient", row, label)
        expect_close(got, reference_gradient(row, label), f"cross_entropy_gradient of row {i} alone (B = 1)",
                     gradient_hints(got, row, label, 1))  # fmt: skip


def check_finite_differences(learner, h: float = 1e-6) -> None:
    z, labels = logits(4, 5, 2.0, seed=8)
    batch = len(z)

    def loss(at: np.ndarray) -> float:
        value = as_array(call(learner, "cross_entropy", at, labels, learner_file=learner.__file__))
        if value is None or value.shape != ():
            raise Failure("cross_entropy(z, labels) should return one number", "a float", f"{value!r}"[:80])
        return float(value)

    numerical = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[index] += h
        down[index] -= h
        numerical[index] = (loss(up) - loss(down)) / (2 * h)
    got = call(learner, "cross_entropy_gradient", z.copy(), labels, learner_file=learner.__file__)
    what = f"cross_entropy_gradient against finite differences of your cross_entropy (B = {batch})"
    expect_close(got, numerical, what, [
        (lambda: close(got, batch * numerical, 1e-4, 1e-7), f"your gradient is B = {batch} times the derivative of "
         "your cross_entropy: the loss is a mean over the batch, so divide the gradient by B"),
        (lambda: close(got, numerical / batch, 1e-4, 1e-7), f"your gradient is 1/B = 1/{batch} of your "
         "cross_entropy's derivative: does cross_entropy sum over the batch? Both average: the loss is the mean"),
    ], rtol=1e-4, atol=1e-7)  # fmt: skip


def check_batch_mean(learner) -> None:
    z, labels = logits(5, 3, 2.0, seed=9)
    batch = len(z)
    loss = call(learner, "cross_entropy", z.copy(), labels, learner_file=learner.__file__)
    expected = reference_loss(z, labels)
    expect_close(loss, expected, f"cross_entropy(z, labels) of a batch of {batch}", [
        (lambda: close(loss, batch * expected), "cross_entropy sums over the batch: the docstring asks for the mean "
         "(divide by B, or use .mean())"),
        *loss_hints(loss, z, labels, False),
    ])  # fmt: skip
    grad = call(learner, "cross_entropy_gradient", z.copy(), labels, learner_file=learner.__file__)
    expected_grad = reference_gradient(z, labels)
    expect_close(grad, expected_grad, f"cross_entropy_gradient(z, labels) of a batch of {batch}", [
        (lambda: close(grad, batch * expected_grad), f"the gradient of a sum, B = {batch} times too big: the loss is "
         "the mean over the batch, so its gradient is (softmax(z) − one_hot(labels)) / B"),
        (lambda: close(grad, expected_grad / batch), "the gradient is divided by B twice"),
        *gradient_hints(grad, z, labels, batch),
    ])  # fmt: skip


CHECKS = [
    Check("shapes", "softmax (B, K), cross_entropy one number, its gradient (B, K), on one tiny batch", check_shapes),
    Check("rows sum to 1", "every row of softmax(z) is a probability distribution", check_rows_sum_to_one),
    Check("softmax values", "softmax equals kqv's on random logits of several shapes", check_softmax_values),
    Check("loss values", "cross_entropy equals kqv's, one row at a time", check_loss_values),
    Check("huge logits", "logits of ±1000: softmax and the loss stay right, the gradient finite", check_huge_logits),
    Check("gradient", "cross_entropy_gradient equals softmax − one-hot, one row at a time", check_gradient),
    Check(
        "finite differences",
        "the gradient equals the numerical derivative of your own cross_entropy",
        check_finite_differences,
    ),  # fmt: skip
    Check("batch mean", "on a whole batch, the loss is the mean and its gradient is divided by B", check_batch_mean),
]
