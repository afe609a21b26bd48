# kqv exercise: multi-head
# expect: split values | view(B, nh, T, hs)
# mistake: view(B, nh, T, hs): mixes positions
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
    B, T, C = x.shape
    return x.view(B, n_head, T, C // n_head)


def merge_heads(x):
    """The inverse of split_heads: put the heads' features back side by side.

    Args:
        x: (B, nh, T, hs) tensor (the number of heads is x.shape[1]).

    Returns:
        (B, T, C) tensor, C = nh * hs: out[b, t, h*hs:(h+1)*hs] == x[b, h, t, :].

    Useful: .transpose(1, 2) first, to (B, T, nh, hs); then .reshape(B, T, C). (.view needs the numbers
    contiguous in memory, which they are not after a transpose: .contiguous().view(…) or .reshape(…).)
    """
    B, n_head, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, n_head * hs)  # (B, T, nh, hs) -> (B, T, C)


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
