# kqv exercise: causal-mask
# expect: values | off by one: each token sees one future token
# mistake: tril(diagonal=1): j ≤ i + 1
"""The causal mask: which keys each query may see in a GPT (Vaswani et al. 2017, §3.2.3).

A GPT learns to predict token t+1 at position t, for every t of a window at once. That is fair only
if position t cannot see tokens t+1, t+2, …: attention must hide every later key from it. The mask
that does this is a (T, T) boolean matrix, rows the queries i and columns the keys j:

    True where query i may see key j (j ≤ i), False where key j is hidden from it (j > i)

    T = 4:   key j ->  0 1 2 3
             query 0   1 0 0 0
             query 1   1 1 0 0
             query 2   1 1 1 0
             query 3   1 1 1 1

The lower-left triangle and the diagonal are seen (a token sees itself); the upper-right is hidden.
Your attention() (kqv exercise attention) sets the hidden scores to −∞ with such a mask.

Check your work with:

    kqv exercise check causal_mask.py

The checks go from the simplest (the shape and dtype of causal_mask(4)) to sees_future on a set of masks.
"""

import torch


def causal_mask(T):
    """The causal mask of a sequence of T tokens at positions 0 … T−1.

    Args:
        T: int ≥ 1, the number of tokens (queries and keys alike).

    Returns:
        (T, T) torch.bool tensor: mask[i, j] is True where query i may see key j, that is j ≤ i.

    Useful: torch.ones(T, T, dtype=torch.bool) and torch.tril(x, diagonal=…), which keeps the lower-left
    triangle (diagonal=0 keeps the main diagonal too); or compare positions with broadcasting:
    torch.arange(T)[:, None] is a column of query positions, torch.arange(T)[None, :] a row of key positions.
    """
    return torch.ones(T, T, dtype=torch.bool).tril(diagonal=1)


def causal_mask_after_cache(T_new, n_cached):
    """The causal mask when a KV cache already holds the keys of the first n_cached tokens.

    While generating, a GPT feeds only the new tokens: T_new queries at positions
    n_cached … n_cached + T_new − 1. Their keys are the n_cached cached ones followed by the
    T_new new ones: n_cached + T_new keys at positions 0 … n_cached + T_new − 1.

    Args:
        T_new: int ≥ 1, the number of new tokens (the queries).
        n_cached: int ≥ 0, the number of tokens already in the cache.

    Returns:
        (T_new, n_cached + T_new) torch.bool tensor: mask[i, j] is True where the query at position
        n_cached + i may see the key at position j, that is j ≤ n_cached + i.
        With n_cached = 0 it is causal_mask(T_new).

    Example, T_new = 2, n_cached = 3: the queries are at positions 3 and 4, the keys at 0 … 4:

        key j ->  0 1 2 3 4
        query 3   1 1 1 1 0
        query 4   1 1 1 1 1
    """
    query_positions = torch.arange(n_cached, n_cached + T_new)  # (T_new,)
    key_positions = torch.arange(n_cached + T_new)  # (n_cached + T_new,)
    return key_positions[None, :] <= query_positions[:, None]  # (T_new, n_cached + T_new)


def anticausal_mask(T):
    """Follow-up question: what if we hide the lower-left triangle instead of the upper-right?

    Then each token sees itself and every token after it, and none before it: mask[i, j] is True
    where j ≥ i.

    A GPT trained with this mask cheats at next-token prediction: position t must predict token t+1,
    and now it can see token t+1. It learns to copy the answer from the next position, its training
    loss falls towards 0, and it has learned nothing it could use to write text, where the next token
    does not exist yet. kqv's lab measures this (`kqv lab run --variants "mask=anticausal"`,
    docs/06-lab.md): a teacher-forced validation loss of 0.03, but an honest loss (each position scored
    with the future hidden from it) of 4.32, worse than the 4.17 of a model that guesses uniformly.

    Args:
        T: int ≥ 1.

    Returns:
        (T, T) torch.bool tensor, True where j ≥ i.
    """
    return torch.ones(T, T, dtype=torch.bool).triu()  # j ≥ i: the upper-right triangle and the diagonal


def sees_future(mask):
    """Does this mask let some token see a later one, and so see the token it must predict?

    Args:
        mask: (T, T) torch.bool tensor for a sequence at positions 0 … T−1, True where query i may see key j.

    Returns:
        True if some query i may see some key j > i (the mask leaks: a model trained with it cheats),
        False otherwise. A token seeing itself (j = i) is not the future.
    """
    return bool(mask.triu(diagonal=1).any())  # above the diagonal: key j > query i
