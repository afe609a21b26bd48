"""Scaled dot-product and multi-head attention, written out (Vaswani et al. 2017, §3.2).

    Attention(Q, K, V) = softmax(Q·Kᵀ/√d_k + mask) · V

Q (query): what each token asks of the others; K (key): how each token describes
itself; V (value): what it carries. Each row of the pattern softmax(…) says how
much of every value a query takes.

The written-out path computes the pattern explicitly, for any score function,
mask and positional bias, and returns it when asked. When the score is
`scaled_dot`, no pattern is wanted and there is no positional score bias, the same
numbers come from `torch.nn.functional.scaled_dot_product_attention` (fused,
memory-efficient); `choose_kernel` says which of the three calls runs, and the
tests check that they agree.

Hook points (kqv.nn.hooks) name the tensors of one call: q, k, v (B, nh, T|Tk, hs),
scores and pattern (B, nh, Tq, Tk), z = pattern·V (B, nh, Tq, hs) and out (B, T, C).
A hook on `scores` or `pattern` forces the written-out path, as `need_pattern` does.

Notation: B batch, nh heads, Tq queries, Tk keys, hs head size, C = nh·hs.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kqv.nn.hooks import HookPoint
from kqv.nn.kv_cache import LayerCache
from kqv.nn.masks import allowed_positions, parse_mask, with_key_padding
from kqv.nn.positional import PositionalEncoding
from kqv.nn.scores import make_score


@dataclass
class AttentionOutput:
    out: torch.Tensor  # (B, T, C)
    pattern: torch.Tensor | None = None  # (B, nh, Tq, Tk), when asked for


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    score,
    allowed: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    hook_scores=None,
    hook_pattern=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The written-out path. q: (B, nh, Tq, hs), k and v: (B, nh, Tk, hs).

    score(q, k) -> (B, nh, Tq, Tk); allowed: bool, True where a query may see a key,
    broadcastable to (B, nh, Tq, Tk); bias: added to the scores (ALiBi), (nh, Tq, Tk).
    Returns (out (B, nh, Tq, hs), pattern (B, nh, Tq, Tk)). A query that may see no key
    at all gets a zero row, not NaN. `hook_scores` and `hook_pattern` (tensor -> tensor,
    e.g. hook points) see the masked scores and the pattern before dropout.
    """
    scores = score(q, k)  # (B, nh, Tq, Tk)
    if bias is not None:
        scores = scores + bias  # (nh, Tq, Tk) broadcasts over B
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))  # -inf, never a finite -1e4
    if hook_scores is not None:
        scores = hook_scores(scores)
    pattern = torch.softmax(scores, dim=-1)  # (B, nh, Tq, Tk), rows sum to 1
    if allowed is not None:
        pattern = pattern.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)  # fully masked rows: 0, not NaN
    if hook_pattern is not None:
        pattern = hook_pattern(pattern)
    if dropout_p > 0.0:
        pattern = F.dropout(pattern, p=dropout_p, training=True)
    return pattern @ v, pattern  # (B, nh, Tq, Tk) @ (B, nh, Tk, hs) -> (B, nh, Tq, hs)


def positions(start: int, T: int, Tk: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries at start … start+T−1 (T,), keys at 0 … Tk−1 (Tk,): the keys are the cache plus the new tokens."""
    return torch.arange(start, start + T, device=device), torch.arange(Tk, device=device)


def has_fully_masked_row(allowed: torch.Tensor | None) -> bool:
    """Whether some query of `allowed` (…, Tq, Tk) may see no key at all. Reads the tensor: a device sync."""
    return allowed is not None and not bool(allowed.any(dim=-1).all())


KERNELS = ("sdpa_causal", "sdpa_masked", "written_out")


def choose_kernel(
    *,
    pattern_read: bool,
    score_bias: bool,
    fused_score: bool,
    causal_self: bool,
    start: int,
    T: int,
    Tk: int,
    fully_masked_row: Callable[[], bool],
) -> str:
    """Which of `KERNELS` computes one attention call; the first row that applies decides.

        case                                                kernel       why
        pattern_read: need_pattern, or a hook on            written_out  only it makes the pattern (and the
          `scores` or `pattern`                                          scores) that are asked for
        score_bias: a positional score bias (ALiBi)         written_out  SDPA gets at most a boolean mask here
        not fused_score: a score other than scaled_dot      written_out  SDPA computes q·kᵀ/√hs only
        causal_self (self-attention, causal mask, no key    sdpa_causal  no mask tensor to build: is_causal=True
          padding) whose queries are the last T keys                     is the triangle from the top-left corner,
          (start + T == Tk), with start == 0 or T == 1                   right when queries and keys start at 0;
                                                                         one query after a cache sees every key
        fully_masked_row(): some query sees no key at all   written_out  SDPA has given NaN there (pytorch#103963);
                                                                         the written-out path gives a zero row
        anything else                                       sdpa_masked  SDPA with the boolean mask `allowed`

    Examples: training or a prompt from position 0 (start=0, T=Tk) and one decoded token (T=1) under
    "causal" -> sdpa_causal; a prefill after a cache (start > 0, T > 1, where is_causal's triangle would
    sit in the wrong corner), "window:N", "none", cross-attention or key padding -> sdpa_masked.
    `fully_masked_row` reads the mask (a device sync), so it is called only where it decides.
    """
    if pattern_read or score_bias or not fused_score:
        return "written_out"
    if causal_self and start + T == Tk and (start == 0 or T == 1):
        return "sdpa_causal"
    return "written_out" if fully_masked_row() else "sdpa_masked"


class MultiHeadAttention(nn.Module):
    """Project to Q, K, V; split into heads; attend; merge heads; project out.

    Self-attention when `context` is None; cross-attention (queries from x, keys and
    values from `context`) otherwise. `key_padding` (B, Tk), True at padding, hides
    padded keys in either case.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        bias: bool = False,
        dropout: float = 0.0,
        score: str = "scaled_dot",
        mask: str = "causal",
        attn_dropout: float | None = None,
    ) -> None:
        """`dropout` applies to the output; `attn_dropout` (default: the same) to the attention weights."""
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_head, self.head_size = n_head, n_embd // n_head
        # one (3C, C) projection whose row blocks are W_Q, W_K, W_V: a single matmul per step
        self.in_proj = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.score = make_score(score, n_head, self.head_size)
        self.mask_name = mask
        self.mask = parse_mask(mask)
        self.dropout = dropout if attn_dropout is None else attn_dropout  # on the pattern
        self.resid_dropout = nn.Dropout(dropout)
        # hook points (identities), named for the tensor that passes through: blocks.0.attn.q, …
        self.q, self.k, self.v = HookPoint(), HookPoint(), HookPoint()  # (B, nh, T, hs), 2 × (B, nh, Tk, hs)
        self.scores, self.pattern = HookPoint(), HookPoint()  # (B, nh, T, Tk) each; written-out path only
        self.z, self.out = HookPoint(), HookPoint()  # pattern·V (B, nh, T, hs); output (B, T, C)

    def project_qkv(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """x: (B, T, C), context: (B, Tk, C) | None -> q (B, nh, T, hs), k and v (B, nh, Tk, hs), heads split.

        Tk = T for self-attention."""
        B, T, C = x.shape
        if context is None:
            qkv = self.in_proj(x).view(B, T, 3, self.n_head, self.head_size)  # (B, T, 3C) -> (B, T, 3, nh, hs)
            return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B, nh, T, hs)
        return (self.project_q(x), *self.project_kv(context))

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> q (B, nh, T, hs), with the W_Q rows of in_proj."""
        C = x.shape[-1]
        w, b = self.in_proj.weight, self.in_proj.bias  # (3C, C), (3C,) | None
        return self.split_heads(F.linear(x, w[:C], None if b is None else b[:C]))  # (B, nh, T, hs)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context: (B, Tk, C) -> k, v (B, nh, Tk, hs), with the W_K, W_V rows of in_proj.

        Cross-attention reads the same encoder output at every decoding step, so a decoder
        computes these once per sentence and passes them back in as `context_kv`."""
        B, Tk, C = context.shape
        w, b = self.in_proj.weight, self.in_proj.bias
        kv = F.linear(context, w[C:], None if b is None else b[C:])  # (B, Tk, 2C)
        kv = kv.view(B, Tk, 2, self.n_head, self.head_size).permute(2, 0, 3, 1, 4)  # (2, B, nh, Tk, hs)
        return kv[0], kv[1]

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, T, C) -> (B, nh, T, hs)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_padding: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        start: int = 0,
        need_pattern: bool = False,
        positional: PositionalEncoding | None = None,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> AttentionOutput:
        """x: (B, T, C) queries at absolute positions start … start+T−1.

        `context_kv`, (k, v) from `project_kv(context)`, stands in for `context`.
        With a `cache` (self-attention only), k and v of earlier positions come from it
        and this call's k and v are appended to it. `positional` (owned by the model, shared
        by all layers) may rotate q and k (RoPE) or add a bias to the scores (ALiBi).
        """
        B, T, C = x.shape
        if context_kv is not None:  # cross-attention with keys and values computed earlier by project_kv
            q, (k, v) = self.project_q(x), context_kv  # (B, nh, T, hs), 2 × (B, nh, Tk, hs)
        else:
            q, k, v = self.project_qkv(x, context)  # (B, nh, T, hs), 2 × (B, nh, Tk_new, hs)

        is_self = context is None and context_kv is None
        Tk = k.shape[2] + (start if cache is not None else 0)  # the cached keys, then this call's
        # positions are built once, and only where something reads them (rope, alibi, a mask tensor): with
        # neither rope nor alibi, the causal kernel (training, decoding one token) builds none
        acts = is_self and positional is not None and positional.acts_in_attention
        q_pos, k_pos = positions(start, T, Tk, x.device) if acts else (None, None)  # (T,), (Tk,)
        if acts:
            q, k = positional.rotate(q, k, q_pos, q_pos)  # RoPE rotates the new q and k; identity otherwise
        if cache is not None:
            k, v = cache.append(k, v, start)  # (B, nh, Tk, hs) each
        q, k, v = self.q(q), self.k(k), self.v(v)  # hook points: k and v are every key and value the queries see
        bias = positional.score_bias(q_pos, k_pos) if acts else None  # (nh, T, Tk) | None

        made = {}  # the mask, made on first use: the causal kernel reads none

        def allowed() -> torch.Tensor | None:  # (B, 1, T|1, Tk) | (1, 1, T, Tk) | None: True where a query sees a key
            if "allowed" not in made:
                by_position = None  # (T, Tk); cross-attention and "none" read no positions
                if is_self and self.mask.kind != "none":
                    pos = (q_pos, k_pos) if acts else positions(start, T, Tk, x.device)
                    by_position = allowed_positions(self.mask, *pos)
                made["allowed"] = with_key_padding(by_position, key_padding)
            return made["allowed"]

        hooked = self.scores.active or self.pattern.active  # they need the written-out path
        kernel = choose_kernel(
            pattern_read=need_pattern or hooked,
            score_bias=bias is not None,
            fused_score=self.score.fast_path_ok,
            causal_self=is_self and self.mask.kind == "causal" and key_padding is None,
            start=start,
            T=T,
            Tk=Tk,
            fully_masked_row=lambda: has_fully_masked_row(allowed()),
        )
        dropout_p = self.dropout if self.training else 0.0
        pattern = None
        if kernel == "sdpa_causal":  # T > 1 only from position 0: a single query sees every key, unmasked
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=T > 1)  # (B, nh, T, hs)
        elif kernel == "sdpa_masked":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed(), dropout_p=dropout_p)  # (B, nh, T, hs)
        else:
            hooks = (self.scores, self.pattern) if hooked else (None, None)
            out, pattern = attention(q, k, v, self.score, allowed(), bias, dropout_p, *hooks)  # (B, nh, T, hs)
        out = self.z(out)  # (B, nh, T, hs)
        out = out.transpose(1, 2).contiguous().view(B, T, C)  # merge heads: (B, nh, T, hs) -> (B, T, C)
        out = self.proj(out)  # (B, T, C)
        if self.training:  # (skipped, not called, in eval: decoding pays for every call)
            out = self.resid_dropout(out)
        return AttentionOutput(self.out(out), pattern if need_pattern else None)
