"""Written-out attention vs a NumPy float64 reference and vs `F.scaled_dot_product_attention`;
MultiHeadAttention's fast path vs its eager path; patterns; fully masked rows; the √hs scale;
every score × mask × positional encoding trains (finite gradients); `choose_kernel` follows its
table, and the forward pass calls the kernel it names, building positions at most once."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kqv.nn.attention as attention_module
from kqv.nn.attention import (
    KERNELS,
    AttentionOutput,
    MultiHeadAttention,
    attention,
    choose_kernel,
    has_fully_masked_row,
)
from kqv.nn.kv_cache import LayerCache
from kqv.nn.masks import allowed_positions, with_key_padding
from kqv.nn.positional import make_positional
from kqv.nn.scores import SCORES, make_score

B, NH, T, HS = 2, 3, 5, 4  # all different, so a transposed axis cannot pass
C = NH * HS
MASKS = ("causal", "window:3", "none", "anticausal")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def qkv(seed=0, tq=T, tk=T, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, NH, tq, HS, generator=g, dtype=dtype) * scale
    k = torch.randn(B, NH, tk, HS, generator=g, dtype=dtype) * scale
    v = torch.randn(B, NH, tk, HS, generator=g, dtype=dtype)
    return q, k, v


def numpy_attention(q, k, v, allowed=None, scale=None):
    """float64 reference, one (batch, head, query) row at a time: softmax(q·Kᵀ/scale + mask)·V.

    allowed: bool array broadcastable to (B, NH, Tq, Tk) or None. A row with no allowed key gives zeros.
    """
    q, k, v = (t.detach().double().numpy() for t in (q, k, v))
    b_, h_, tq, hs = q.shape
    tk = k.shape[2]
    scale = math.sqrt(hs) if scale is None else scale
    mask = np.ones((b_, h_, tq, tk), dtype=bool) if allowed is None else np.broadcast_to(allowed, (b_, h_, tq, tk))
    out = np.zeros((b_, h_, tq, v.shape[-1]))
    pattern = np.zeros((b_, h_, tq, tk))
    for b in range(b_):
        for h in range(h_):
            for i in range(tq):
                if not mask[b, h, i].any():
                    continue  # a query that may see nothing: zero row
                s = k[b, h] @ q[b, h, i] / scale  # (Tk,)
                s = np.where(mask[b, h, i], s, -np.inf)
                e = np.exp(s - s.max())
                p = e / e.sum()
                pattern[b, h, i] = p
                out[b, h, i] = p @ v[b, h]
    return out, pattern


def padding(b=B, tk=T):
    """(B, Tk) True at padding: row 0 right-padded by 2, row 1 left-padded by 1."""
    pad = torch.zeros(b, tk, dtype=torch.bool)
    pad[0, -2:] = True
    pad[1, :1] = True
    return pad


def padding_without_empty_rows(mask):
    """(B, T) padding that leaves every query at least one key under `mask`, so the fused kernel may run."""
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, 2] = True
    if mask == "anticausal":
        pad[0, :2] = True  # left padding: the last query still sees itself
    else:
        pad[0, -2:] = True  # right padding: the first query still sees itself
    return pad


# --- the written-out `attention` function ----------------------------------------------------------------------


def test_written_out_causal_equals_sdpa_and_numpy_reference():
    q, k, v = qkv()
    allowed = allowed_positions("causal", torch.arange(T), torch.arange(T))  # (T, T)
    out, pattern = attention(q, k, v, make_score("scaled_dot", NH, HS), allowed)
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, fused, atol=1e-6, rtol=1e-6)
    ref_out, ref_pattern = numpy_attention(q, k, v, allowed.numpy())
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(pattern.numpy(), ref_pattern, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mask", MASKS)
def test_written_out_with_padding_equals_sdpa_and_numpy_reference(mask):
    q, k, v = qkv(seed=1)
    pos = torch.arange(T)
    pad = padding_without_empty_rows(mask)
    allowed = with_key_padding(allowed_positions(mask, pos, pos), pad)  # (B, 1, T, T) or (B, 1, 1, T)
    assert bool(allowed.any(dim=-1).all())
    out, pattern = attention(q, k, v, make_score("scaled_dot", NH, HS), allowed)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(out, fused, atol=1e-6, rtol=1e-6)
    ref_out, ref_pattern = numpy_attention(q, k, v, allowed.numpy())
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(pattern.numpy(), ref_pattern, atol=1e-6, rtol=1e-5)
    assert not pattern.masked_select(~allowed.expand_as(pattern)).any()  # masked entries exactly 0


def test_written_out_float64_matches_numpy_to_1e_12():
    q, k, v = qkv(seed=2, dtype=torch.float64)
    allowed = with_key_padding(allowed_positions("causal", torch.arange(T), torch.arange(T)), padding())
    out, _ = attention(q, k, v, make_score("scaled_dot", NH, HS), allowed)
    ref_out, _ = numpy_attention(q, k, v, allowed.numpy())
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-12, rtol=1e-12)


def test_fully_masked_rows_give_zeros_not_nan():
    q, k, v = qkv()
    allowed = torch.ones(B, 1, T, T, dtype=torch.bool)
    allowed[0, :, 2] = False  # query 2 of batch row 0 sees nothing
    allowed[1] = False  # batch row 1 sees nothing at all
    q.requires_grad_(True)
    out, pattern = attention(q, k, v, make_score("scaled_dot", NH, HS), allowed)
    assert torch.isfinite(out).all() and torch.isfinite(pattern).all()
    assert torch.equal(out[0, :, 2], torch.zeros(NH, HS)) and torch.equal(out[1], torch.zeros(NH, T, HS))
    assert torch.equal(pattern[0, :, 2], torch.zeros(NH, T)) and torch.equal(pattern[1], torch.zeros(NH, T, T))
    out.sum().backward()
    assert torch.isfinite(q.grad).all()  # no NaN sneaks back through the zeroed softmax either


def test_mask_is_minus_infinity_not_a_finite_number():
    """PITFALL 2: with scores far below −1e4 a finite mask value would win the softmax; −inf never does."""
    q, k, v = qkv(seed=6)

    def very_negative(q, k):  # any score function with the shared signature will do
        return torch.full((B, NH, T, T), -3e4)

    allowed = allowed_positions("causal", torch.arange(T), torch.arange(T))
    _, pattern = attention(q, k, v, very_negative, allowed)
    expected = allowed.float() / allowed.sum(-1, keepdim=True)  # uniform over the allowed keys
    torch.testing.assert_close(pattern, expected.expand(B, NH, T, T), atol=1e-6, rtol=0)


def test_alibi_bias_is_added_before_the_softmax():
    q, k, v = qkv(seed=3)
    pos = torch.arange(T)
    bias = make_positional("alibi", C, NH, T).score_bias(pos, pos)  # (nh, T, T)
    allowed = allowed_positions("causal", pos, pos)
    out, _ = attention(q, k, v, make_score("scaled_dot", NH, HS), allowed, bias)
    scores = q @ k.transpose(-2, -1) / math.sqrt(HS) + bias
    expected = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    plain, _ = attention(q, k, v, make_score("scaled_dot", NH, HS), allowed)
    assert (out - plain).abs().max() > 1e-3  # the bias did something


def test_scale_is_sqrt_head_size_not_sqrt_model_width():
    q, k, v = qkv(seed=4, scale=2.0)  # larger scores so the two scales are far apart
    out, _ = attention(q, k, v, make_score("scaled_dot", NH, HS))
    by_hs, _ = numpy_attention(q, k, v, scale=math.sqrt(HS))
    by_c, _ = numpy_attention(q, k, v, scale=math.sqrt(C))
    np.testing.assert_allclose(out.numpy(), by_hs, atol=1e-6, rtol=1e-5)
    assert np.abs(out.numpy() - by_c).max() > 1e-2


def test_dropout_on_the_pattern_only_in_the_written_out_call():
    q, k, v = qkv(seed=5)
    score = make_score("scaled_dot", NH, HS)
    torch.manual_seed(0)
    _, dropped = attention(q, k, v, score, dropout_p=0.5)
    _, kept = attention(q, k, v, score)
    zeros = dropped == 0
    assert 0 < zeros.float().mean() < 1
    torch.testing.assert_close(dropped[~zeros], 2 * kept[~zeros])  # inverted dropout: survivors scaled by 1/(1−p)


# --- MultiHeadAttention ----------------------------------------------------------------------------------------


def mha(mask="causal", score="scaled_dot", bias=False, seed=0):
    torch.manual_seed(seed)
    return MultiHeadAttention(C, NH, bias=bias, score=score, mask=mask).eval()


def x_input(seed=0, t=T):
    return torch.randn(B, t, C, generator=torch.Generator().manual_seed(seed))


def count_sdpa(monkeypatch):
    calls = []
    original = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    return calls


def test_mha_matches_a_numpy_reference_with_its_own_weights():
    m = mha(bias=True)
    x = x_input()
    res = m(x, key_padding=padding(), need_pattern=True)
    W = {n: p.detach().double().numpy() for n, p in m.named_parameters()}
    xs = x.double().numpy()
    qkv = xs @ W["in_proj.weight"].T + W["in_proj.bias"]  # (B, T, 3C): row blocks W_Q, W_K, W_V
    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]

    def heads(a):
        return torch.from_numpy(a.reshape(B, T, NH, HS).transpose(0, 2, 1, 3).copy())  # (B, nh, T, hs)

    allowed = with_key_padding(allowed_positions("causal", torch.arange(T), torch.arange(T)), padding())
    out, _ = numpy_attention(heads(q), heads(k), heads(v), allowed.numpy())
    out = out.transpose(0, 2, 1, 3).reshape(B, T, C) @ W["proj.weight"].T + W["proj.bias"]
    np.testing.assert_allclose(res.out.detach().numpy(), out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("pad", [False, True], ids=["no_pad", "key_pad"])
def test_mha_fast_path_equals_eager_path(mask, pad, monkeypatch):
    m, x = mha(mask), x_input(1)
    key_padding = padding_without_empty_rows(mask) if pad else None
    calls = count_sdpa(monkeypatch)
    eager = m(x, key_padding=key_padding, need_pattern=True)
    assert calls == [] and eager.pattern is not None  # a requested pattern forces the written-out path
    fast = m(x, key_padding=key_padding)
    assert fast.pattern is None
    assert len(calls) == 1  # the fused kernel really ran, so this is not eager vs eager
    torch.testing.assert_close(fast.out, eager.out, atol=1e-6, rtol=1e-5)


def test_mha_fast_path_is_used_for_plain_causal_training(monkeypatch):
    calls = count_sdpa(monkeypatch)
    mha()(x_input())
    assert len(calls) == 1 and calls[0].get("is_causal") is True


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_mha_equals_torch_multihead_attention_with_the_same_weights(cross):
    """torch.nn.MultiheadAttention keeps W_Q, W_K, W_V as row blocks of one in_proj_weight, as kqv does."""
    S = 7 if cross else T
    m = mha("none", bias=True)
    x, context = x_input(4), x_input(5, t=S)
    key_padding = torch.zeros(B, S, dtype=torch.bool)
    key_padding[0, -2:] = True
    ref = torch.nn.MultiheadAttention(C, NH, bias=True, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(m.in_proj.weight)
        ref.in_proj_bias.copy_(m.in_proj.bias)
        ref.out_proj.weight.copy_(m.proj.weight)
        ref.out_proj.bias.copy_(m.proj.bias)
    source = context if cross else x
    expected, expected_pattern = ref(x, source, source, key_padding_mask=key_padding, average_attn_weights=False)
    got = m(x, context=context if cross else None, key_padding=key_padding, need_pattern=True)
    torch.testing.assert_close(got.out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pattern, expected_pattern, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pad", [False, True], ids=["no_pad", "key_pad"])
def test_cross_attention_fast_equals_eager_and_sees_every_unpadded_key(pad):
    S = 7  # context length ≠ T
    m = mha("causal")  # the self-attention mask does not apply to cross-attention
    x, context = x_input(2), x_input(3, t=S)
    key_padding = torch.zeros(B, S, dtype=torch.bool)
    if pad:
        key_padding[0, -3:] = True
        key_padding[1, :2] = True
    eager = m(x, context=context, key_padding=key_padding if pad else None, need_pattern=True)
    fast = m(x, context=context, key_padding=key_padding if pad else None)
    torch.testing.assert_close(fast.out, eager.out, atol=1e-6, rtol=1e-5)
    p = eager.pattern
    assert p.shape == (B, NH, T, S)
    torch.testing.assert_close(p.sum(-1), torch.ones(B, NH, T), atol=1e-6, rtol=0)
    hidden = key_padding[:, None, None, :].expand_as(p)
    assert not p[hidden].any()  # padded keys get exactly 0
    assert (p[~hidden] > 0).all()  # every other key (future ones included) gets weight


@pytest.mark.parametrize("mask", MASKS)
def test_pattern_rows_sum_to_one_and_masked_entries_are_exactly_zero(mask):
    p = mha(mask)(x_input(4), need_pattern=True).pattern  # (B, nh, T, T)
    assert p.shape == (B, NH, T, T)
    torch.testing.assert_close(p.sum(-1), torch.ones(B, NH, T), atol=1e-6, rtol=0)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    hidden = {"causal": j > i, "anticausal": j < i, "window:3": (j > i) | (j <= i - 3), "none": (j < 0) & (i < 0)}[mask]
    assert not p[..., hidden].any()  # causal: upper-right triangle exactly 0; anticausal: lower-left
    assert (p[..., ~hidden] > 0).all()


@pytest.mark.parametrize("mask", ["causal", "anticausal", "none"])
@pytest.mark.parametrize("need_pattern", [False, True])
def test_fully_padded_sequence_gives_zeros_and_no_nan(mask, need_pattern):
    m = mha(mask, bias=True)
    x = x_input(5).requires_grad_(True)
    key_padding = torch.zeros(B, T, dtype=torch.bool)
    key_padding[1] = True  # every key of batch row 1 is padding
    res = m(x, key_padding=key_padding, need_pattern=need_pattern)
    assert torch.isfinite(res.out).all()
    # nothing to attend to: the merged heads are 0, so the output is just the projection's bias
    torch.testing.assert_close(res.out[1], m.proj.bias.detach().expand(T, C), atol=0, rtol=0)
    if need_pattern:
        assert torch.equal(res.pattern[1], torch.zeros(NH, T, T))
    res.out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_anticausal_query_past_every_unpadded_key_gets_a_zero_row():
    m = mha("anticausal", bias=True)
    key_padding = torch.zeros(B, T, dtype=torch.bool)
    key_padding[0, 3:] = True  # row 0: queries 3 and 4 may only see keys ≥ themselves, all padding
    res = m(x_input(6), key_padding=key_padding, need_pattern=True)
    assert torch.isfinite(res.out).all()
    assert torch.equal(res.pattern[0, :, 3:], torch.zeros(NH, 2, T))
    torch.testing.assert_close(res.pattern[0, :, :3].sum(-1), torch.ones(NH, 3), atol=1e-6, rtol=0)


def test_mha_rejects_width_not_divisible_by_heads():
    with pytest.raises(ValueError, match="n_embd=10.*n_head=3"):
        MultiHeadAttention(10, 3)


def test_mha_returns_a_named_result():
    res = mha()(x_input())
    assert isinstance(res, AttentionOutput) and res.out.shape == (B, T, C) and res.pattern is None


@pytest.mark.parametrize("pos_name", ["none", "rope", "alibi"])
@pytest.mark.parametrize("mask", ["causal", "none", "anticausal", "window:2"])
@pytest.mark.parametrize("score", list(SCORES))
def test_every_score_mask_and_position_trains_with_finite_gradients(score, mask, pos_name):
    torch.manual_seed(0)
    m = MultiHeadAttention(C, NH, bias=True, score=score, mask=mask).train()
    positional = make_positional(pos_name, C, NH, T)
    x = x_input(7).requires_grad_(True)
    key_padding = torch.zeros(B, T, dtype=torch.bool)
    key_padding[1, -1] = True
    for need_pattern in (False, True):
        res = m(x, key_padding=key_padding, need_pattern=need_pattern, positional=positional)
        assert res.out.shape == (B, T, C) and torch.isfinite(res.out).all()
        m.zero_grad()
        x.grad = None
        (res.out**2).mean().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        for name, p in m.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
        assert m.in_proj.weight.grad.abs().sum() > 0  # the scores, hence q, shape the output


# --- which kernel: choose_kernel's table, and the forward pass calling what it names -----------------------------

ANY = object()
# (start, T, Tk) of one call; the queries are the last T keys when start + T == Tk
SHAPES = {
    "training": (0, 5, 5),
    "first_token": (0, 1, 1),
    "one_cached_token": (4, 1, 5),
    "prefill_after_cache": (4, 3, 7),
    "cross_keys": (0, 5, 7),  # queries are not the last keys
    "start_without_cache": (3, 4, 4),  # the keys are only this call's, at 0 … 3
}
IS_CAUSAL_FITS = {"training", "first_token", "one_cached_token"}
# choose_kernel's docstring table as a partition: every input matches exactly one row. Columns: pattern_read,
# score_bias, fused_score, causal_self, shape names, fully_masked_row -> kernel. ANY in the last column: not read.
KERNEL_TABLE = [
    (True, ANY, ANY, ANY, ANY, ANY, "written_out"),
    (False, True, ANY, ANY, ANY, ANY, "written_out"),
    (False, False, False, ANY, ANY, ANY, "written_out"),
    (False, False, True, True, IS_CAUSAL_FITS, ANY, "sdpa_causal"),
    (False, False, True, True, set(SHAPES) - IS_CAUSAL_FITS, False, "sdpa_masked"),
    (False, False, True, True, set(SHAPES) - IS_CAUSAL_FITS, True, "written_out"),
    (False, False, True, False, ANY, False, "sdpa_masked"),
    (False, False, True, False, ANY, True, "written_out"),
]


def table_rows(inputs):
    def fits(cell, value):
        return cell is ANY or (value in cell if isinstance(cell, set) else cell == value)

    return [row for row in KERNEL_TABLE if all(fits(cell, value) for cell, value in zip(row[:6], inputs, strict=True))]


@pytest.mark.parametrize("fully_masked", [False, True], ids=["rows_see_keys", "fully_masked_row"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("causal_self", [False, True], ids=["other_mask", "causal_self"])
@pytest.mark.parametrize("fused_score", [False, True], ids=["other_score", "scaled_dot"])
@pytest.mark.parametrize("score_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("pattern_read", [False, True], ids=["no_pattern", "pattern"])
def test_choose_kernel_follows_its_table(pattern_read, score_bias, fused_score, causal_self, shape, fully_masked):
    rows = table_rows((pattern_read, score_bias, fused_score, causal_self, shape, fully_masked))
    assert len(rows) == 1, rows  # the table covers every case once
    asked = []

    def fully_masked_row():
        asked.append(True)
        return fully_masked

    start, t, tk = SHAPES[shape]
    kernel = choose_kernel(
        pattern_read=pattern_read,
        score_bias=score_bias,
        fused_score=fused_score,
        causal_self=causal_self,
        start=start,
        T=t,
        Tk=tk,
        fully_masked_row=fully_masked_row,
    )
    assert kernel == rows[0][-1] and kernel in KERNELS
    assert len(asked) == (0 if rows[0][5] is ANY else 1)  # the mask (a device sync) is read only where it decides


@pytest.mark.parametrize("shape", [s for s, (start, t, tk) in SHAPES.items() if start + t == tk])
def test_is_causal_is_the_causal_mask_exactly_where_choose_kernel_uses_it(shape):
    start, t, tk = SHAPES[shape]
    q, k, v = qkv(seed=7, tq=t, tk=tk)
    allowed = allowed_positions("causal", torch.arange(start, start + t), torch.arange(tk))  # (T, Tk)
    expected, _ = attention(q, k, v, make_score("scaled_dot", NH, HS), allowed)
    kernel = choose_kernel(
        pattern_read=False,
        score_bias=False,
        fused_score=True,
        causal_self=True,
        start=start,
        T=t,
        Tk=tk,
        fully_masked_row=lambda: has_fully_masked_row(allowed),
    )
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)  # what the sdpa_causal kernel computes
    agree = torch.allclose(fused, expected, atol=1e-6, rtol=1e-5)
    assert (kernel == "sdpa_causal") == (shape in IS_CAUSAL_FITS)
    assert agree == (kernel == "sdpa_causal")  # after a cache, is_causal's triangle sits in the wrong corner


def test_has_fully_masked_row_matches_a_loop_over_rows():
    g = torch.Generator().manual_seed(8)
    for density in (0.1, 0.3, 0.6, 0.9):
        for _ in range(20):
            allowed = torch.rand(B, 1, T, T, generator=g) < density
            by_loop = any(not any(row) for row in allowed.reshape(-1, T).tolist())
            assert has_fully_masked_row(allowed) == by_loop
    assert has_fully_masked_row(None) is False  # no mask: every query sees every key


def key_padding_rows(kind, tk):
    pad = torch.zeros(B, tk, dtype=torch.bool)
    if kind == "some":
        pad[0, -2:] = True  # row 0 right-padded: every query still sees a key
    elif kind == "all_of_row_1":
        pad[1] = True  # row 1 is all padding: its queries see nothing
    return pad


FORWARD_CASES = {  # name: (MultiHeadAttention and call settings, kernel, is_causal, positions() calls)
    "training": ({"train": True}, "sdpa_causal", True, 0),
    "one_cached_token": ({"cached": 4, "t": 1}, "sdpa_causal", False, 0),
    "prefill_after_cache": ({"cached": 3, "t": 2}, "sdpa_masked", None, 1),
    "cross_key_padding": ({"context": 7, "padding": "some"}, "sdpa_masked", None, 0),
    "mask_none": ({"mask": "none"}, "sdpa_masked", None, 0),
    "window_3": ({"mask": "window:3"}, "sdpa_masked", None, 1),
    "alibi": ({"pos": "alibi"}, "written_out", None, 1),
    "rope": ({"pos": "rope"}, "sdpa_causal", True, 1),
    "score_dot": ({"score": "dot"}, "written_out", None, 1),
    "need_pattern": ({"need_pattern": True}, "written_out", None, 1),
    "hook_on_pattern": ({"hook": True}, "written_out", None, 1),
    "fully_masked_padding_row": ({"padding": "all_of_row_1"}, "written_out", None, 1),
}


@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_forward_calls_the_kernel_choose_kernel_names(case, monkeypatch):
    setting, expected, is_causal, n_positions = FORWARD_CASES[case]
    m = mha(setting.get("mask", "causal"), setting.get("score", "scaled_dot"), bias=True).train(
        setting.get("train", False)
    )
    positional = make_positional(setting.get("pos", "none"), C, NH, 16)
    t, cached = setting.get("t", T), setting.get("cached", 0)
    cache = LayerCache(B, NH, 16, HS) if cached else None
    if cache is not None:  # the cached positions, before any spy
        m(x_input(8, t=cached), cache=cache, positional=positional)
    context = x_input(9, t=setting["context"]) if "context" in setting else None
    tk = context.shape[1] if context is not None else cached + t
    kwargs = {
        "context": context,
        "key_padding": key_padding_rows(setting["padding"], tk) if "padding" in setting else None,
        "cache": cache,
        "start": cached,
        "need_pattern": setting.get("need_pattern", False),
        "positional": positional,
    }
    if setting.get("hook"):
        m.pattern.register_forward_hook(lambda module, inputs, output: None)

    chosen, fused, written_out, built = [], [], [], []
    original = {name: getattr(attention_module, name) for name in ("choose_kernel", "attention", "positions")}

    def spy(name, record):
        def call(*args, **kw):
            result = original[name](*args, **kw)
            record.append(result if name == "choose_kernel" else kw)
            return result

        monkeypatch.setattr(attention_module, name, call)

    spy("choose_kernel", chosen)
    spy("attention", written_out)
    spy("positions", built)
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: fused.append(kw) or sdpa(*a, **kw))

    res = m(x_input(10, t=t), **kwargs)
    assert chosen == [expected]
    assert len(written_out) == (expected == "written_out")
    assert len(fused) == (expected != "written_out")
    if expected == "sdpa_causal":
        assert "attn_mask" not in fused[0] and fused[0]["is_causal"] is is_causal
    if expected == "sdpa_masked":
        assert "is_causal" not in fused[0] and "attn_mask" in fused[0]
    assert len(built) == n_positions  # once where a mask tensor, rope or alibi reads them; never twice
    assert torch.isfinite(res.out).all()
