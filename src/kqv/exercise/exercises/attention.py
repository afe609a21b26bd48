"""The `attention` exercise: scaled dot-product attention for one head, softmax(Q·Kᵀ/√d_k + mask)·V.

The checks, simplest first: the shapes on one tiny unbatched input; the rows of the weights sum to 1;
the values on random batched inputs against torch's `scaled_dot_product_attention` and kqv's
`kqv.nn.attention.attention`; the mask (hidden keys get exactly 0, even against huge scores); the
gradients against autograd of kqv's; and (slow) the learner's function inside kqv's tiny GPT, trained
for the `tiny` preset's 50 steps to the losses of kqv's own attention.

Every hint is chosen by computing what a known mistake would return on the same inputs and comparing it
with what the learner returned (or, when the learner's function raises, by trying it on an input where
the mistake does not raise).
"""

import math
from collections.abc import Callable
from contextlib import nullcontext
from functools import cache
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from kqv.config import GPTConfig, TrainConfig, from_dict, load_preset
from kqv.data.text import BatchSampler, fixed_batches, read_corpus, split_train_val
from kqv.exercise.framework import (
    Check,
    Failure,
    as_array,
    call,
    close,
    describe,
    expect_close,
    expect_shape,
    first_hint,
)
from kqv.models.gpt import GPT
from kqv.nn import attention as attention_module
from kqv.nn.attention import attention as kqv_attention
from kqv.nn.scores import make_score
from kqv.tokenizer.char import CharTokenizer
from kqv.train.optim import make_optimizer, scheduled_lr

NAME = "attention"
STEP = "2. Attention"
TEACHES = "scaled dot-product attention for one head: softmax(Q·Kᵀ/√d_k + mask)·V, with its weights"
FILENAME = "attention.py"
SOLUTION = ["src/kqv/nn/attention.py: attention", "src/kqv/nn/scores.py: ScaledDot.forward"]

SKELETON = '''\
# kqv exercise: attention
"""Scaled dot-product attention for one head (Vaswani et al. 2017, §3.2.1):

    Attention(Q, K, V) = softmax(Q·Kᵀ / √d_k + mask) · V

Each query (a row of Q) asks a question, each key (a row of K) says what its token offers, and each
value (a row of V) is what that token hands over. A query's scores against every key, divided by √d_k
and turned into weights by a softmax over the keys, say how much of each value it takes.

Check your work with:

    kqv exercise check attention.py

The checks go from the simplest (the shapes on one tiny input) to the strongest (your function inside
kqv's GPT, trained for 50 steps, must reach the loss of kqv's own attention).

Shape names: Tq queries, Tk keys, d_k the width of a query and of a key, d_v the width of a value.
"…" stands for any leading batch axes: none for one sequence, (B, nh) inside kqv's GPT, where q is
(B, nh, T, hs).
"""

import math

import torch


def attention(q, k, v, mask=None):
    """Scaled dot-product attention.

    Args:
        q: (…, Tq, d_k) float tensor, the queries: one row per token that asks.
        k: (…, Tk, d_k) float tensor, the keys: one row per token that can be looked at.
        v: (…, Tk, d_v) float tensor, the values: what each of those tokens hands over.
        mask: None (every query sees every key), or a bool tensor broadcastable to (…, Tq, Tk):
            True where query i may see key j, False where key j is hidden from it.
            Every query sees at least one key.

    Returns:
        (output, weights):
        output: (…, Tq, d_v), each query's weighted average of the values.
        weights: (…, Tq, Tk), the attention weights: every entry ≥ 0, every row sums to 1,
            and a hidden key gets exactly 0.

    The steps:
        1. scores = Q·Kᵀ / √d_k      (…, Tq, d_k) @ (…, d_k, Tk) -> (…, Tq, Tk)
        2. hide the masked keys: their scores become −∞ (before the softmax: exp(−∞) = 0)
        3. weights = softmax of the scores over the keys, the last axis
        4. output = weights · V      (…, Tq, Tk) @ (…, Tk, d_v) -> (…, Tq, d_v)

    Useful: `Tensor.transpose(-2, -1)` (the last two axes, whatever the batch axes), `Tensor.masked_fill`,
    `torch.softmax(x, dim=...)`, `math.sqrt`. Count axes from the end so that one function serves any
    number of batch axes.
    """
    raise NotImplementedError
'''

REFERENCE = SKELETON.replace(
    """    raise NotImplementedError
""",
    """    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (…, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys: −∞, so exactly 0 after the softmax
    weights = torch.softmax(scores, dim=-1)  # over the keys: each row sums to 1
    return weights @ v, weights  # (…, Tq, d_v), (…, Tq, Tk)
""",
)


def skeleton() -> str:
    return SKELETON


def reference() -> str:
    return REFERENCE


# ---------------------------------------------------------------- the reference and its known mistakes

RTOL, ATOL = 1e-4, 1e-5  # float32 inputs: the learner's order of operations may differ from kqv's


def expected(q, k, v, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """kqv's own attention for one head or batched heads: (output (…, Tq, d_v), weights (…, Tq, Tk))."""
    lead = q.shape[:-2]
    q4, k4, v4 = (t.reshape(-1, 1, *t.shape[-2:]) for t in (q, k, v))  # (…, T, d) -> (N, 1, T, d)
    allowed = (
        None
        if mask is None
        else torch.broadcast_to(mask, (*lead, q.shape[-2], k.shape[-2])).reshape(-1, 1, q.shape[-2], k.shape[-2])
    )
    out, weights = kqv_attention(q4, k4, v4, make_score("scaled_dot", 1, q.shape[-1]), allowed)
    return out.reshape(*lead, *out.shape[-2:]), weights.reshape(*lead, *weights.shape[-2:])


def weighted(scores: torch.Tensor, v: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    weights = torch.softmax(scores, dim=dim)
    return weights @ v, weights


def scaled(q, k) -> torch.Tensor:
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def masked(scores, mask, fill=float("-inf")) -> torch.Tensor:
    return scores if mask is None else scores.masked_fill(~mask, fill)


def matches(got, mistake: Callable[[], torch.Tensor]) -> Callable[[], bool]:
    """A hint test: does the learner's `got` equal what `mistake()` computes?"""
    return lambda: close(got, mistake(), rtol=RTOL, atol=ATOL)


def scale_hints(got, q, k, v, mask, part: int) -> list:
    """Hints for a wrongly scaled score; `part` 0 compares outputs, 1 compares weights."""
    raw = masked(q @ k.transpose(-2, -1), mask)

    def with_scale(factor):
        return lambda: weighted(raw * factor, v)[part]

    hints = [
        (matches(got, with_scale(1.0)), "the scores are not divided by √d_k"),
        (matches(got, with_scale(1 / q.shape[-1])), "the scores are divided by d_k; divide by its square root, √d_k"),
        (matches(got, with_scale(math.sqrt(q.shape[-1]))), "the scores are multiplied by √d_k; divide them by it"),
    ]
    if v.shape[-1] != q.shape[-1]:
        hints.append(
            (
                matches(got, with_scale(1 / math.sqrt(v.shape[-1]))),
                "the scale uses d_v, v's width: it is √d_k, the width of q and k",
            )
        )
    for axis, size in enumerate(q.shape[:-1]):
        if size not in (q.shape[-1], v.shape[-1]):
            hint = f"the scores are divided by √{size}, q's axis {axis}: d_k is q's last axis, q.shape[-1]"
            hints.append((matches(got, with_scale(1 / math.sqrt(size))), hint))
    return hints


SOFTMAX_OVER_QUERIES = "the softmax runs over the queries (dim −2) instead of the keys (dim −1)"


def softmax_axis_hints(got, q, k, v, mask, part: int) -> list:
    hints = []
    for axis in range(q.dim() - 1):
        if axis == q.dim() - 2:
            hint = SOFTMAX_OVER_QUERIES
        else:
            hint = f"the softmax runs over axis {axis}, a batch axis: the keys are the last axis, dim=-1"
        hints.append((matches(got, lambda axis=axis: weighted(masked(scaled(q, k), mask), v, axis)[part]), hint))
    return hints


SQUARE = 4  # the probe's size: every axis the same, so that a mistake that crashes elsewhere runs here


def square_probe_hint(learner, mask) -> str:
    """Run the learner on square (4, 4) inputs and name the mistake its output matches, or ""."""
    generator = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(SQUARE, SQUARE, generator=generator) for _ in range(3))
    try:
        got = learner.attention(q, k, v, mask=None if mask is None else torch.ones(SQUARE, SQUARE, dtype=torch.bool))
        out = got[0] if isinstance(got, tuple) else got
    except Exception:
        return ""
    scale = 1 / math.sqrt(SQUARE)
    mistakes = [
        (
            lambda: v @ expected(q, k, v)[1],
            "the output is V·weights; it is weights·V: (…, Tq, Tk) @ (…, Tk, d_v) -> (…, Tq, d_v)",
        ),
        (
            lambda: weighted(q @ k * scale, v)[0],
            "K is not transposed: the scores are Q·K; they are Q·Kᵀ, (…, Tq, d_k) @ (…, d_k, Tk)",
        ),
        (
            lambda: weighted(q.transpose(-2, -1) @ k * scale, v)[0],
            "the scores are Qᵀ·K, (d_k, d_k); they are Q·Kᵀ, (Tq, Tk): one row per query, one column per key",
        ),
        (
            lambda: weighted(k @ q.transpose(-2, -1) * scale, v)[0],
            "the scores are K·Qᵀ, (Tk, Tq); they are Q·Kᵀ, (Tq, Tk): one row per query, one column per key",
        ),
    ]
    for mistake, hint in mistakes:
        if close(out, mistake(), rtol=RTOL, atol=ATOL):
            return hint
    return ""


def crash_hint(learner, q, k, v, mask) -> str:
    """The learner's attention raised on (q, k, v, mask): find an input where it runs, and say what differs."""

    def works(*args, mask=None) -> bool:
        try:
            got = learner.attention(*args, mask=mask)
            return isinstance(got, tuple) and close(got[0], expected(*args, mask)[0], rtol=RTOL, atol=ATOL)
        except Exception:
            return False

    if mask is None and works(q, k, v, mask=torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool)):
        return "with mask=None (the default) nothing is hidden: skip the masking step (`if mask is not None:`)"
    if q.dim() > 2:
        one = (t.reshape(-1, *t.shape[-2:])[0] for t in (q, k, v))
        if works(*one, mask=mask):
            return (
                "it works on one (Tq, d_k) input but not on batched (…, Tq, d_k) ones: count axes from the end "
                "(k.transpose(-2, -1), q.shape[-1], dim=-1), not k.T or fixed axes"
            )
    return square_probe_hint(learner, mask)


def attend(learner, q, k, v, mask=None) -> tuple:
    """learner.attention(q, k, v, mask=mask) -> (output, weights); a crash or a non-pair says what it can."""
    try:
        got = call(learner, "attention", q, k, v, mask=mask)
    except Failure as failure:
        failure.hint = failure.hint or crash_hint(learner, q, k, v, mask)
        raise
    if not (isinstance(got, tuple) and len(got) == 2):
        out_shape = (*q.shape[:-1], v.shape[-1])
        hint = "return both: `return output, weights`" if tuple(getattr(got, "shape", ())) == out_shape else ""
        raise Failure(
            "attention() should return a pair (output, weights)", "a tuple (output, weights)", describe(got), hint
        )
    return got


def random_inputs(seed: int, q_shape, k_shape, v_shape, dtype=torch.float32) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=generator, dtype=dtype) for shape in (q_shape, k_shape, v_shape))


def random_mask(seed: int, Tq: int, Tk: int) -> torch.Tensor:
    """(Tq, Tk) bool, about half True; every row has a True and a False (so that the inverted mask hides no row)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(Tq, Tk, generator=generator) < 0.5
    seen = torch.randint(Tk, (Tq,), generator=generator)
    mask[torch.arange(Tq), seen] = True
    mask[torch.arange(Tq), (seen + 1 + torch.randint(Tk - 1, (Tq,), generator=generator)) % Tk] = False
    return mask


# ---------------------------------------------------------------- the checks


def check_shapes(learner) -> None:
    q, k, v = random_inputs(0, (3, 2), (4, 2), (4, 5))  # Tq=3, Tk=4, d_k=2, d_v=5: every size different
    out, weights = attend(learner, q, k, v)
    weight_hints = [
        (lambda: tuple(weights.shape) == (4, 3), "the weights are (Tk, Tq): the scores are K·Qᵀ; they are Q·Kᵀ"),
        (lambda: tuple(weights.shape) == (2, 2), "the weights are (d_k, d_k): the scores are Qᵀ·K; they are Q·Kᵀ"),
    ]
    expect_shape(weights, (3, 4), "the weight matrix for q (3, 2), k (4, 2), v (4, 5)", weight_hints)
    out_hints = [(lambda: tuple(out.shape) == (5, 3), "the output is (d_v, Tq), transposed: it is weights @ v")]
    expect_shape(out, (3, 5), "the output for q (3, 2), k (4, 2), v (4, 5)", out_hints)


def check_rows_sum_to_one(learner) -> None:
    q, k, v = random_inputs(1, (3, 2), (4, 2), (4, 5))
    _, weights = attend(learner, q, k, v)
    w = as_array(weights)
    if w is None or w.shape != (3, 4):
        raise Failure("the weights should be a (Tq, Tk) = (3, 4) tensor", "shape (3, 4)", describe(weights))
    raw = "the weights are the raw scores: take their softmax over the keys (dim=-1)"
    hints = [
        *softmax_axis_hints(weights, q, k, v, None, 1),
        (lambda: np.allclose(w.sum(-2), 1.0, atol=1e-4), SOFTMAX_OVER_QUERIES),
        (matches(weights, lambda: scaled(q, k)), raw),
        (matches(weights, lambda: q @ k.T), raw),
    ]
    if not np.isfinite(w).all() or (w < 0).any():
        raise Failure(
            "some weights are negative or not finite", "weights ≥ 0", f"min {np.nanmin(w):.4g}", first_hint(hints)
        )
    sums = w.sum(-1)
    if not np.allclose(sums, 1.0, atol=1e-4):
        row = int(np.argmax(~np.isclose(sums, 1.0, atol=1e-4)))
        raise Failure(
            f"row {row} of the weights (query {row}'s weights over the 4 keys) sums to {sums[row]:.4g}, not 1",
            "every row sums to 1", f"row sums {np.round(sums, 4).tolist()}", first_hint(hints),
        )  # fmt: skip


def check_values(learner) -> None:
    q, k, v = random_inputs(2, (2, 3, 5, 8), (2, 3, 6, 8), (2, 3, 6, 4))  # (B, nh, T, hs): every size different
    given = tuple(t.clone() for t in (q, k, v))
    out, weights = attend(learner, q, k, v)
    hints = scale_hints(weights, *given, None, 1) + softmax_axis_hints(weights, *given, None, 1)
    what = "the weight tensor for q (2, 3, 5, 8), k (2, 3, 6, 8)"
    expect_close(weights, expected(*given)[1], what, hints, RTOL, ATOL)
    what = "the output (against torch's scaled_dot_product_attention)"
    expect_close(out, F.scaled_dot_product_attention(*given), what, (), RTOL, ATOL)
    if isinstance(out, torch.Tensor) and out.dtype != q.dtype:
        hint = "a tensor of another dtype entered the computation (.double(), numpy, torch.tensor(…, dtype=…))"
        raise Failure("the output should keep the inputs' dtype (kqv's GPT feeds it to float32 layers)",
                      f"{q.dtype}", f"{out.dtype}", hint)  # fmt: skip
    for name, before, after in zip("qkv", given, (q, k, v), strict=True):
        if not torch.equal(before, after):
            hint = ""
            if name == "q" and torch.allclose(after, before / math.sqrt(q.shape[-1]), rtol=RTOL, atol=ATOL):
                hint = "`q /= math.sqrt(d_k)` divides the caller's q in place: write `q = q / …`, or scale the scores"
            raise Failure(
                f"attention() changed its input {name} in place", f"{name} unchanged", f"{name} changed", hint
            )


FINITE_FILL = (
    "the hidden scores get a finite value (like −1e4), not −∞: a key that scores above it still gets weight; "
    "use float('-inf')"
)


def finite_fill_hints(got, scores, v, mask) -> list:
    """Hints for a mask that hides with a finite number instead of −∞, filled in or added."""
    hints = []
    for fill in (-10.0, -20.0, -30.0, -50.0, -1e2, -1e3, -1e4, -1e5, -1e6, -1e9):
        hints.append((matches(got, lambda fill=fill: weighted(scores.masked_fill(~mask, fill), v)[1]), FINITE_FILL))
        hints.append((matches(got, lambda fill=fill: weighted(scores + (~mask) * fill, v)[1]), FINITE_FILL))
    return hints


def check_mask(learner) -> None:
    q, k, v = random_inputs(3, (2, 3, 5, 8), (2, 3, 6, 8), (2, 3, 6, 4))
    mask = random_mask(3, 5, 6)  # (Tq, Tk), broadcast over (B, nh)
    out, weights = attend(learner, q, k, v, mask)
    ref_out, ref_weights = expected(q, k, v, mask)
    scores = scaled(q, k)
    hints = [
        (matches(weights, lambda: weighted(masked(scores, ~mask), v)[1]),
         "the mask is inverted: it hides the keys that are True (True means 'may see')"),
        (matches(weights, lambda: torch.softmax(scores, dim=-1)), "the mask is not used: hidden keys still get weight"),
        (matches(weights, lambda: torch.softmax(scores, dim=-1).masked_fill(~mask, 0.0)),
         "the mask is applied after the softmax, so the rows no longer sum to 1: set the scores to −∞ before it"),
        (matches(weights, lambda: weighted(masked(scores, mask, 0.0), v)[1]),
         "the hidden scores were set to 0, not −∞: exp(0) = 1, so a hidden key still gets weight"),
        (matches(weights, lambda: weighted(scores * mask, v)[1]),
         "the scores were multiplied by the mask, which makes the hidden ones 0, not −∞: exp(0) = 1 gives weight"),
        (matches(weights, lambda: weighted(scores + mask, v)[1]),
         "the boolean mask was added to the scores (True counts as 1): set the hidden scores to −∞ instead"),
        *finite_fill_hints(weights, scores, v, mask),
        *scale_hints(weights, q, k, v, mask, 1),
    ]  # fmt: skip
    expect_close(weights, ref_weights, "the weight tensor with a (5, 6) mask", hints, RTOL, ATOL)
    w = as_array(weights)
    hidden = np.broadcast_to(~mask.numpy(), w.shape)
    if (w[hidden] != 0).any():
        index = tuple(int(i) for i in np.argwhere(hidden & (w != 0))[0])
        message = f"a hidden key gets weight {w[index]:.3g}, not exactly 0 (at index {index})"
        raise Failure(message, "0", f"{w[index]:.3g}", first_hint(hints))
    expect_close(out, ref_out, "the output with a (5, 6) mask", (), RTOL, ATOL)
    check_huge_scores(learner)


HUGE = 1e6  # scores this large can be learned; a finite fill above −1e6 does not hide a key that has one


def check_huge_scores(learner) -> None:
    """The hidden key scores +1e6 and the visible ones −1e6: only −∞ (or a fill below −2e6) still hides it."""
    q = torch.tensor([[2.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])  # (2, 4); √d_k = 2, so a score is q·k / 2 = k[0]
    k = torch.tensor([[-HUGE, 0, 0, 0], [-HUGE + 1, 0, 0, 0], [HUGE, 0, 0, 0]])  # (3, 4): scores −1e6, −1e6+1, +1e6
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])  # (3, 2)
    mask = torch.tensor([[True, True, False], [True, False, False]])  # key 2 hidden from both queries
    out, weights = attend(learner, q, k, v, mask)
    ref_out, ref_weights = expected(q, k, v, mask)
    hints = finite_fill_hints(weights, scaled(q, k), v, mask)
    expect_close(
        weights,
        ref_weights,
        "the weight matrix when a hidden key scores +1e6 and the visible ones −1e6",
        hints,
        RTOL,
        ATOL,
    )
    expect_close(out, ref_out, "the output when a hidden key scores +1e6", hints, RTOL, ATOL)


def check_gradient(learner) -> None:
    q, k, v = random_inputs(4, (2, 2, 4, 3), (2, 2, 5, 3), (2, 2, 5, 2))
    mask = random_mask(4, 4, 5)
    upstream = torch.randn(2, 2, 4, 2, generator=torch.Generator().manual_seed(5))  # ∂loss/∂output
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_out, _ = expected(*leaves, mask)
    ref_grads = torch.autograd.grad((ref_out * upstream).sum(), leaves)
    mine = [t.clone().requires_grad_() for t in (q, k, v)]
    out, _ = attend(learner, *mine, mask)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        hint = "the output is cut from the graph: .detach(), .data, .item(), torch.no_grad() or numpy lose the gradient"
        raise Failure(
            "the output does not depend on q, k and v through autograd", "an output with a grad_fn", describe(out), hint
        )
    grads = torch.autograd.grad((out * upstream).sum(), mine, allow_unused=True)
    forward_hints = scale_hints(out.detach(), q, k, v, mask, 0)  # a wrong forward pass, named
    detached = "no gradient reaches q and k: the weights were cut from the graph (.detach(), .data, torch.no_grad())"
    for name, got, want in zip("qkv", grads, ref_grads, strict=True):
        got = torch.zeros_like(want) if got is None else got
        hints = [(lambda got=got, name=name: name in "qk" and not got.any(), detached), *forward_hints]
        expect_close(got, want, f"∂loss/∂{name} (against autograd through kqv's attention)", hints, RTOL, ATOL)


# ---------------------------------------------------------------- end to end: the learner's attention in kqv's GPT

LOSS_TOLERANCE = 1e-4  # nats; measured: every step within 4.8e-7 of kqv's own attention (1 and 2 threads)


@cache
def tiny_setup() -> tuple:
    """The `tiny` preset's configs and the embedded Tiny Shakespeare, char-tokenized, split 90/10."""
    text = read_corpus().text
    tokenizer = CharTokenizer.train(text)
    ids = np.array(tokenizer.encode(text), dtype=np.int64)
    tables = load_preset("tiny")
    model = from_dict(GPTConfig, {**tables["model"], "vocab_size": tokenizer.vocab_size}, "tiny model")
    train = from_dict(TrainConfig, tables["train"], "tiny train")
    return model, train, *split_train_val(ids)


def train_tiny(learner=None) -> tuple[list[float], float]:
    """Train the tiny GPT for the preset's max_iters steps from its seed -> (each step's loss, validation loss).

    With a learner, every attention call of the model goes through learner.attention: `need_patterns=True`
    sends MultiHeadAttention down its written-out path, whose module-level `attention` is swapped for an
    adapter for the run (and restored after it, whatever happens)."""
    model_cfg, cfg, train_ids, val_ids = tiny_setup()
    torch.manual_seed(cfg.seed)
    model = GPT(model_cfg)
    betas = (cfg.beta1, cfg.beta2)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, betas, "cpu", cfg.decay_embeddings, cfg.eps)
    batches = BatchSampler(train_ids, model_cfg.block_size, cfg.batch_size, cfg.seed)
    calls = []

    def learners_attention(q, k, v, score, allowed=None, bias=None, dropout_p=0.0, hook_scores=None, hook_pattern=None):
        # q, k, v: (B, nh, T, hs); allowed: (1, 1, T, T) bool, the causal mask; the tiny GPT has no bias or dropout
        calls.append(1)
        return attend(learner, q, k, v, allowed)

    swap = mock.patch.object(attention_module, "attention", learners_attention) if learner else nullcontext()
    losses = []
    with swap:
        for step in range(cfg.max_iters):
            for group in optimizer.param_groups:
                group["lr"] = scheduled_lr(step, cfg)
            x, y = batches.next_batch()
            loss = model(x, y, need_patterns=learner is not None).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            val = fixed_batches(val_ids, model_cfg.block_size, cfg.batch_size, cfg.eval_iters, cfg.seed)
            val_loss = float(np.mean([model(b.x, b.y, need_patterns=learner is not None).loss.item() for b in val]))
    if learner is not None and not calls:
        raise Failure("the GPT never called your attention()", "one call per layer and step", "none")
    return losses, val_loss


@cache
def kqv_losses() -> tuple[tuple[float, ...], float]:
    losses, val_loss = train_tiny()
    return tuple(losses), val_loss


def check_in_gpt(learner) -> None:
    call(learner, "attention", *random_inputs(0, (3, 2), (4, 2), (4, 5)))  # not implemented yet: say so first
    ref_losses, ref_val = kqv_losses()
    losses, val_loss = train_tiny(learner)
    for step, (got, want) in enumerate(zip(losses, ref_losses, strict=True), start=1):
        if not (math.isfinite(got) and abs(got - want) <= LOSS_TOLERANCE):
            hint = (
                "already the first forward pass differs, before any update: the GPT passes q, k, v of shape "
                "(B, nh, T, hs) = (8, 2, 32, 16) and a causal mask of shape (1, 1, 32, 32); try yours on those"
                if step == 1
                else ""
            )
            raise Failure(
                f"the training loss at step {step} of {len(losses)} differs from kqv's by more than {LOSS_TOLERANCE:g}",
                f"{want:.6f}", f"{got:.6f}", hint,
            )  # fmt: skip
    if abs(val_loss - ref_val) > LOSS_TOLERANCE:
        raise Failure("the trained model's validation loss differs from kqv's", f"{ref_val:.6f}", f"{val_loss:.6f}")


CHECKS = [
    Check("shapes", "q (3, 2), k (4, 2), v (4, 5) give output (3, 5) and weights (3, 4)", check_shapes),
    Check("rows sum to 1", "every weight ≥ 0 and each query's weights over the keys sum to 1", check_rows_sum_to_one),
    Check("values", "random (B, nh, T, hs) inputs: weights as kqv's attention, output as torch's SDPA", check_values),
    Check("mask", "hidden keys get exactly 0 weight, even when they score +1e6 (−∞, not a finite fill)", check_mask),
    Check("gradient", "∂loss/∂q, ∂k, ∂v as autograd through kqv's attention", check_gradient),
    Check(
        "in the GPT",
        "kqv's tiny GPT trained 50 steps with your attention reaches the losses of kqv's own",
        check_in_gpt,
        slow=True,
    ),
]
