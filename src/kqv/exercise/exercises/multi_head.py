"""The `multi-head` exercise: project to Q, K, V, split into heads, attend, merge the heads, project out.

The weights use kqv's layout (kqv.nn.attention.MultiHeadAttention, and torch.nn.MultiheadAttention's
too): one w_qkv (3C, C) whose row blocks are W_Q, W_K, W_V, and w_o (C, C), applied as nn.Linear does,
y = x·Wᵀ, without biases.

The checks, simplest first: the shape of split_heads; which columns and positions each head gets; merge_heads
as its inverse (on a contiguous input too, which is what attention returns); the values of
multi_head_attention without a mask against kqv's MultiHeadAttention and torch.nn.MultiheadAttention
holding the same weights; with the causal mask (and the future changing nothing); and the gradients for x,
w_qkv and w_o against autograd through kqv's module.
"""

import math

import torch

from kqv.exercise.framework import (
    Check,
    Failure,
    as_array,
    call,
    close,
    describe,
    expect_close,
    expect_shape,
    filled_in,
)
from kqv.nn.attention import MultiHeadAttention

NAME = "multi-head"
STEP = "2. Attention"
TEACHES = "multi-head attention: project to q, k, v, split into heads, attend, merge, project out"
FILENAME = "multi_head.py"
SOLUTION = [
    "src/kqv/nn/attention.py: MultiHeadAttention.project_qkv, MultiHeadAttention.split_heads",
    "src/kqv/nn/attention.py: MultiHeadAttention.forward",
]

SKELETON = '''\
# kqv exercise: multi-head
"""Multi-head attention (Vaswani et al. 2017, §3.2.2).

One attention head mixes the values with one pattern. Multi-head attention runs n_head smaller heads
side by side, each on its own slice of the features, so that each can attend to something different
(one to the previous token, another to the last vowel, …), then joins their results:

    x (B, T, C) -> q, k, v = x·W_Qᵀ, x·W_Kᵀ, x·W_Vᵀ          (B, T, C) each
                -> split into heads                         (B, nh, T, hs) each, hs = C / nh
                -> attention in every head at once           (B, nh, T, hs)
                -> merge the heads                           (B, T, C)
                -> the output projection ·W_oᵀ               (B, T, C)

Shape names: B sequences, T tokens, C = n_embd features, nh = n_head heads, hs = C / nh head size.

The weights, exactly as kqv's MultiHeadAttention (and torch.nn.MultiheadAttention) hold them:

    w_qkv: (3C, C), the row blocks W_Q = w_qkv[:C], W_K = w_qkv[C:2C], W_V = w_qkv[2C:]
    w_o:   (C, C)
    applied as nn.Linear does, y = x @ W.T (a weight's row i makes output feature i); no biases.

Head h owns the features h·hs … (h+1)·hs − 1 of q, k and v: split_heads gives it those columns, for every
position, and merge_heads puts them back.

Check your work with:

    kqv exercise check multi_head.py

The checks go from the simplest (split_heads' shape) to the strongest (the gradients of all three inputs).
"""

import math

import torch


def split_heads(x, n_head):
    """Split the features into heads.

    Args:
        x: (B, T, C) tensor.
        n_head: int nh, dividing C.

    Returns:
        (B, nh, T, hs) tensor, hs = C // nh: out[b, h, t, :] == x[b, t, h*hs:(h+1)*hs].

    Useful: x.view(B, T, nh, hs) cuts each token's C features into nh slices of hs; then
    .transpose(1, 2) brings the head axis before the positions. (view(B, nh, T, hs) directly
    would read the numbers in the wrong order and mix positions.)
    """
    raise NotImplementedError


def merge_heads(x):
    """The inverse of split_heads: put the heads' features back side by side.

    Args:
        x: (B, nh, T, hs) tensor (the number of heads is x.shape[1]).

    Returns:
        (B, T, C) tensor, C = nh * hs: out[b, t, h*hs:(h+1)*hs] == x[b, h, t, :].

    Useful: .transpose(1, 2) first, to (B, T, nh, hs); then .reshape(B, T, C). (.view needs the numbers
    contiguous in memory, which they are not after a transpose: .contiguous().view(…) or .reshape(…).)
    """
    raise NotImplementedError


def multi_head_attention(x, w_qkv, w_o, n_head, causal=True):
    """Multi-head self-attention over x.

    Args:
        x: (B, T, C) float tensor.
        w_qkv: (3C, C), the row blocks W_Q, W_K, W_V; q = x @ W_Q.T, and so on.
        w_o: (C, C), the output projection: out = merged @ w_o.T.
        n_head: int nh, dividing C.
        causal: if True, position i sees only positions j ≤ i (a GPT); if False, every position.

    Returns:
        (B, T, C) tensor.

    The steps:
        1. q, k, v = x @ W_Q.T, x @ W_K.T, x @ W_V.T              (B, T, C) each
        2. split_heads each                                      (B, nh, T, hs)
        3. scores = q @ kᵀ / √hs, hs the head size (not C)       (B, nh, T, T)
           with causal=True, the hidden scores (j > i) -> −∞
           weights = softmax over the last axis
           z = weights @ v                                       (B, nh, T, hs)
           (your attention() from `kqv exercise attention` does this step: paste it in if you like)
        4. merge_heads(z)                                        (B, T, C)
        5. … @ w_o.T                                             (B, T, C)
    """
    raise NotImplementedError
'''

BODIES = [  # the reference's bodies, in the skeleton's order
    """\
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, T, nh, hs) -> (B, nh, T, hs)
""",
    """\
    B, n_head, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, n_head * hs)  # (B, T, nh, hs) -> (B, T, C)
""",
    """\
    B, T, C = x.shape
    w_q, w_k, w_v = w_qkv.split(C, dim=0)  # (C, C) each: the row blocks of w_qkv
    q = split_heads(x @ w_q.T, n_head)  # (B, nh, T, hs)
    k = split_heads(x @ w_k.T, n_head)
    v = split_heads(x @ w_v.T, n_head)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // n_head)  # (B, nh, T, T)
    if causal:
        seen = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # j ≤ i
        scores = scores.masked_fill(~seen, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return merge_heads(weights @ v) @ w_o.T  # (B, nh, T, hs) -> (B, T, C) -> (B, T, C)
""",
]


REFERENCE = filled_in(SKELETON, BODIES)


def skeleton() -> str:
    return SKELETON


def reference() -> str:
    return REFERENCE


# ---------------------------------------------------------------- kqv's module, and the mistakes written out

RTOL, ATOL = 1e-4, 1e-5  # float32
B, T, C, NH = 2, 5, 12, 3  # every size different, and √C (3.46) far from √hs (2)
HS = C // NH


def inputs(seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, T, C), w_qkv (3C, C), w_o (C, C); weights of about 1/√C, so that the scores are about 1."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=generator, dtype=dtype)
    w_qkv = torch.randn(3 * C, C, generator=generator, dtype=dtype) / math.sqrt(C)
    w_o = torch.randn(C, C, generator=generator, dtype=dtype) / math.sqrt(C)
    return x, w_qkv, w_o


def kqv_module(w_qkv: torch.Tensor, w_o: torch.Tensor, causal: bool) -> MultiHeadAttention:
    """kqv's MultiHeadAttention (no bias, no dropout) holding copies of w_qkv and w_o, in eval mode."""
    module = MultiHeadAttention(C, NH, bias=False, mask="causal" if causal else "none").to(w_qkv.dtype)
    with torch.no_grad():
        module.in_proj.weight.copy_(w_qkv)
        module.proj.weight.copy_(w_o)
    return module.eval()


def torch_module(w_qkv: torch.Tensor, w_o: torch.Tensor) -> torch.nn.MultiheadAttention:
    module = torch.nn.MultiheadAttention(C, NH, bias=False, batch_first=True)
    with torch.no_grad():
        module.in_proj_weight.copy_(w_qkv)
        module.out_proj.weight.copy_(w_o)
    return module.eval()


def heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.view(b, t, n_head, c // n_head).transpose(1, 2)


def unheads(z: torch.Tensor) -> torch.Tensor:
    b, nh, t, hs = z.shape
    return z.transpose(1, 2).reshape(b, t, nh * hs)


def written_out(
    x,
    w_qkv,
    w_o,
    *,
    causal: bool,
    n_head: int = NH,
    scale: float | None = None,
    project_out: bool = True,
    transpose_qkv: bool = True,
    transpose_o: bool = True,
    qk_swapped: bool = False,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention with the switches that make its known mistakes."""
    w_q, w_k, w_v = w_qkv.split(C, dim=0)
    if qk_swapped:
        w_q, w_k = w_k, w_q
    q, k, v = (heads(x @ (w.T if transpose_qkv else w), n_head) for w in (w_q, w_k, w_v))
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else 1 / math.sqrt(C // n_head))
    if allowed is None and causal:
        allowed = torch.ones(T, T, dtype=torch.bool).tril()
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    merged = unheads(torch.softmax(scores, dim=-1) @ v)
    if not project_out:
        return merged
    return merged @ (w_o.T if transpose_o else w_o)


def value_hints(got, x, w_qkv, w_o, causal: bool) -> list:
    def mistake(**switches):
        return lambda: close(got, written_out(x, w_qkv, w_o, causal=causal, **switches), RTOL, ATOL)

    untransposed = "the weights are used untransposed, x @ W; nn.Linear's convention is x @ W.T"
    return [
        (mistake(scale=1 / math.sqrt(C)), "the scores are divided by √C, the model width; each head's by √hs, its own"),
        (mistake(scale=1.0), "the scores are not divided by √hs"),
        (mistake(project_out=False), "the output projection is missing: the merged heads go through @ w_o.T"),
        (mistake(transpose_qkv=False, transpose_o=False), untransposed),
        (mistake(transpose_qkv=False), untransposed + " (for W_Q, W_K and W_V)"),
        (mistake(transpose_o=False), untransposed + " (for w_o)"),
        (mistake(qk_swapped=True), "q and k are swapped: w_qkv's row blocks are W_Q, W_K, W_V, in that order"),
        (mistake(n_head=1), "attention ran as one head of width C: split q, k and v into n_head heads first"),
    ]


def learners_output(learner, x, w_qkv, w_o, causal: bool) -> torch.Tensor:
    got = call(learner, "multi_head_attention", x, w_qkv, w_o, NH, causal=causal)
    expect_shape(got, (B, T, C), f"multi_head_attention(x {tuple(x.shape)}, …, n_head={NH}, causal={causal})")
    return got


# ---------------------------------------------------------------- the checks


def check_split_shapes(learner) -> None:
    x, _, _ = inputs(0)
    got = call(learner, "split_heads", x, NH)
    shape = tuple(getattr(got, "shape", ()))
    hints = [
        (lambda: shape == (B, T, NH, HS), "the transpose is missing: view(B, T, nh, hs), then .transpose(1, 2)"),
        (lambda: shape == (B, HS, T, NH), f"nh and hs are swapped: {NH} heads of hs = C / nh = {HS} features each"),
        (lambda: shape == (B, T, HS, NH), f"nh and hs are swapped, and the transpose is missing: {NH} heads of {HS}"),
    ]
    expect_shape(got, (B, NH, T, HS), f"split_heads(x (B, T, C) = {tuple(x.shape)}, n_head={NH})", hints)


def check_split_values(learner) -> None:
    x, _, _ = inputs(1)
    got = call(learner, "split_heads", x, NH)
    hints = [
        (
            lambda: close(got, x.view(B, NH, T, HS), RTOL, ATOL),
            "the heads were made with view(B, nh, T, hs): that reads the numbers in (T, C) order and mixes "
            "positions; view(B, T, nh, hs), then .transpose(1, 2)",
        ),
        (
            lambda: close(got, x.view(B, T, HS, NH).permute(0, 3, 1, 2), RTOL, ATOL),
            "head h takes the features h, h + nh, h + 2·nh, …; it takes the hs features h·hs … (h+1)·hs − 1, "
            "side by side: view(B, T, nh, hs)",
        ),
    ]
    what = "split_heads(x, 3) (out[b, h, t] should be x[b, t, h·hs:(h+1)·hs])"
    expect_close(got, heads(x, NH), what, hints, RTOL, ATOL)


def merge_crash_hint(learner, z: torch.Tensor) -> str:
    """merge_heads(z) raised on a contiguous z: does it work when the transposed z is contiguous instead?"""
    transposed_contiguous = z.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other memory order
    try:
        if close(learner.merge_heads(transposed_contiguous), unheads(z), RTOL, ATOL):
            return (
                "after .transpose(1, 2) the numbers are not contiguous, and .view needs them so: "
                "call .contiguous() before .view, or use .reshape"
            )
    except Exception:
        pass
    return ""


def check_merge(learner) -> None:
    x, _, _ = inputs(2)
    z = torch.randn(B, NH, T, HS, generator=torch.Generator().manual_seed(3))  # contiguous, as attention returns
    try:
        got = call(learner, "merge_heads", z)
    except Failure as failure:
        failure.hint = failure.hint or merge_crash_hint(learner, z)
        raise
    hints = [
        (
            lambda: close(got, z.reshape(B, T, C), RTOL, ATOL),
            "the transpose is missing: (B, nh, T, hs) -> .transpose(1, 2) -> (B, T, nh, hs) -> (B, T, C)",
        ),
        (
            lambda: close(got, z.permute(0, 2, 3, 1).reshape(B, T, C), RTOL, ATOL),
            "the features are interleaved across heads; head h's hs features go side by side at h·hs … (h+1)·hs − 1",
        ),
    ]
    what = f"merge_heads(z of shape {tuple(z.shape)}) (out[b, t, h·hs:(h+1)·hs] should be z[b, h, t])"
    expect_close(got, unheads(z), what, hints, RTOL, ATOL)
    split = call(learner, "split_heads", x, NH)
    back = call(learner, "merge_heads", split)
    expect_close(back, x, "merge_heads(split_heads(x, 3)), which should give x back,", (), RTOL, ATOL)


def check_values(learner) -> None:
    x, w_qkv, w_o = inputs(4)
    got = learners_output(learner, x, w_qkv, w_o, causal=False)
    with torch.no_grad():
        kqv = kqv_module(w_qkv, w_o, causal=False)(x).out
        theirs = torch_module(w_qkv, w_o)(x, x, x, need_weights=False)[0]
    what = "multi_head_attention(…, causal=False) (against kqv's MultiHeadAttention, mask 'none')"
    expect_close(got, kqv, what, value_hints(got, x, w_qkv, w_o, causal=False), RTOL, ATOL)
    expect_close(
        got, theirs, "multi_head_attention(…, causal=False) (against torch.nn.MultiheadAttention)", (), RTOL, ATOL
    )


def check_causal(learner) -> None:
    x, w_qkv, w_o = inputs(5)
    got = learners_output(learner, x, w_qkv, w_o, causal=True)
    with torch.no_grad():
        kqv = kqv_module(w_qkv, w_o, causal=True)(x).out

    def with_mask(allowed):
        return lambda: close(got, written_out(x, w_qkv, w_o, causal=True, allowed=allowed), RTOL, ATOL)

    full = torch.ones(T, T, dtype=torch.bool)
    hints = [
        (with_mask(full), "causal=True, but every position sees every other: hide the keys j > i"),
        (with_mask(full.tril(-1)), "the mask hides the diagonal: a token must see itself (j ≤ i)"),
        (with_mask(full.triu()), "the mask is the upper triangle: each token sees the future; keep j ≤ i"),
        (with_mask(full.tril(1)), "off by one: each token sees one future token"),
        *value_hints(got, x, w_qkv, w_o, causal=True),
    ]
    expect_close(got, kqv, "multi_head_attention(…, causal=True) (against kqv's MultiHeadAttention)", hints, RTOL, ATOL)
    changed = x.clone()
    changed[:, 3:] = torch.randn(B, T - 3, C, generator=torch.Generator().manual_seed(6))  # a different future
    again = call(learner, "multi_head_attention", changed, w_qkv, w_o, NH, causal=True)
    expect_close(again[:, :3], got[:, :3], "positions 0 … 2 after changing the tokens at 3 … 4", (), RTOL, ATOL)


def check_gradient(learner) -> None:
    x, w_qkv, w_o = inputs(7)
    upstream = torch.randn(B, T, C, generator=torch.Generator().manual_seed(8))  # ∂loss/∂output
    module = kqv_module(w_qkv, w_o, causal=True)
    x_ref = x.clone().requires_grad_()
    (module(x_ref).out * upstream).sum().backward()
    want = {"x": x_ref.grad, "w_qkv": module.in_proj.weight.grad, "w_o": module.proj.weight.grad}
    leaves = {name: t.clone().requires_grad_() for name, t in (("x", x), ("w_qkv", w_qkv), ("w_o", w_o))}
    out = call(learner, "multi_head_attention", leaves["x"], leaves["w_qkv"], leaves["w_o"], NH, causal=True)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        hint = "the output is cut from the graph: .detach(), .data, torch.no_grad() or numpy lose the gradient"
        raise Failure(
            "the output does not depend on x and the weights through autograd", "a grad_fn", describe(out), hint
        )
    grads = torch.autograd.grad((out * upstream).sum(), list(leaves.values()), allow_unused=True)
    forward_hints = value_hints(out.detach(), x, w_qkv, w_o, causal=True)  # a wrong forward pass, named
    for (name, leaf), got in zip(leaves.items(), grads, strict=True):
        got = torch.zeros_like(leaf) if got is None else got
        hint = (
            f"no gradient reaches {name}: it was cut from the graph (.data, .detach(), or a copy through "
            "torch.tensor / numpy); use the tensor itself"
        )
        hints = [(lambda got=got: not as_array(got).any(), hint), *forward_hints]
        expect_close(
            got, want[name], f"∂loss/∂{name} (against autograd through kqv's MultiHeadAttention)", hints, RTOL, ATOL
        )


CHECKS = [
    Check(
        "split shapes", "split_heads of (2, 5, 12) into 3 heads is (B, nh, T, hs) = (2, 3, 5, 4)", check_split_shapes
    ),
    Check("split values", "head h of position t holds x[b, t, h·hs:(h+1)·hs]", check_split_values),
    Check("merge", "merge_heads undoes split_heads, on any (B, nh, T, hs) tensor", check_merge),
    Check(
        "values", "no mask: as kqv's MultiHeadAttention and torch.nn.MultiheadAttention with your weights", check_values
    ),
    Check("causal", "causal=True: as kqv's causal MultiHeadAttention; the future changes nothing", check_causal),
    Check("gradient", "∂loss/∂x, ∂w_qkv, ∂w_o as autograd through kqv's MultiHeadAttention", check_gradient),
]
