# kqv exercise: attention
# expect: mask | the mask is applied after the softmax
# mistake: masks the weights, not the scores
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
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (…, Tq, Tk)
    weights = torch.softmax(scores, dim=-1)  # over the keys: each row sums to 1
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights  # (…, Tq, d_v), (…, Tq, Tk)
