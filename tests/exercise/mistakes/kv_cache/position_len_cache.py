# kqv exercise: kv-cache
# expect: first step | counts layers, not tokens
# mistake: the position taken as len(cache)
"""One decoding step with a KV cache: the logits of a full recompute, for the work of one token.

A causal language model predicts the token after tokens[0 … t] from row t of full_forward(tokens).
Generating one token at a time that way recomputes the keys and values of every earlier token at every
step, yet under the causal mask they never change: token i only ever looks at tokens 0 … i. A KV cache
keeps them. Each step feeds only the newest token: in every layer its key and value are appended to
that layer's cache, and its query attends over all the cached rows (the mask has nothing left to hide,
since no cached token comes after the new one).

Below, given (read it, do not change it): a tiny language model with random weights, two layers of
single-head causal self-attention (pre-norm, with a small MLP) and learned position embeddings, and
full_forward, which computes everything from scratch. Your decode_step does the same arithmetic for
one new token.

The cache is a list with one (k, v) pair per layer. k and v are (T_past, D) tensors: row i holds the
key / value of token i in that layer, and T_past, the same in every layer, is the number of tokens
already fed. empty_cache(model) is the cache before the first token (T_past = 0).

Check your work:  kqv exercise check kv_cache.py
(Running the file, python kv_cache.py, prints 20 tokens generated both ways.)
"""

import math

import torch

VOCAB, D, D_FF, N_LAYER, MAX_LEN = 13, 16, 32, 2, 32  # tokens, width, MLP width, layers, positions


def make_model(seed: int = 0) -> dict:
    """A random tiny language model: its weights are all this exercise needs (it was never trained).

    model["tok_emb"]  (VOCAB, D)    one row per token
    model["pos_emb"]  (MAX_LEN, D)  one row per position 0 … MAX_LEN − 1, added to the token's row
    model["layers"]   N_LAYER dicts: "W_q", "W_k", "W_v", "W_o" (D, D); "W_1" (D, D_FF), "W_2" (D_FF, D)
    model["unembed"]  (D, VOCAB)
    """
    g = torch.Generator().manual_seed(seed)

    def weight(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=g) / math.sqrt(rows)

    layers = [
        {"W_q": weight(D, D), "W_k": weight(D, D), "W_v": weight(D, D), "W_o": weight(D, D),
         "W_1": weight(D, D_FF), "W_2": weight(D_FF, D)}
        for _ in range(N_LAYER)
    ]  # fmt: skip
    return {
        "tok_emb": torch.randn(VOCAB, D, generator=g),
        "pos_emb": torch.randn(MAX_LEN, D, generator=g),
        "layers": layers,
        "unembed": weight(D, VOCAB),
    }


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """x (T, D) -> (T, D): each row divided by its root mean square (no learned scale)."""
    return x / x.pow(2).mean(dim=-1, keepdim=True).add(1e-6).sqrt()


def mlp(layer: dict, x: torch.Tensor) -> torch.Tensor:
    """x (T, D) -> (T, D): the layer's feed-forward part, on each row alone (it never mixes positions)."""
    return torch.relu(rms_norm(x) @ layer["W_1"]) @ layer["W_2"]


def full_forward(model: dict, tokens: list[int]) -> torch.Tensor:
    """tokens: T ints (T ≤ MAX_LEN) -> logits (T, VOCAB): row t scores the token after tokens[0 … t].

    No cache: every position's query, key and value are recomputed."""
    T = len(tokens)
    x = model["tok_emb"][tokens] + model["pos_emb"][:T]  # (T, D): token t at position t
    later = torch.ones(T, T, dtype=torch.bool).triu(1)  # (T, T): True where the key comes after the query
    for layer in model["layers"]:
        h = rms_norm(x)
        q, k, v = h @ layer["W_q"], h @ layer["W_k"], h @ layer["W_v"]  # (T, D) each
        scores = (q @ k.T / math.sqrt(D)).masked_fill(later, float("-inf"))  # (T queries, T keys)
        x = x + torch.softmax(scores, dim=-1) @ v @ layer["W_o"]  # each row: a weighted sum of v's rows
        x = x + mlp(layer, x)
    return rms_norm(x) @ model["unembed"]  # (T, VOCAB)


def empty_cache(model: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The cache before the first token: for each layer, k and v with no rows yet, (0, D) each."""
    return [(torch.zeros(0, D), torch.zeros(0, D)) for _ in model["layers"]]


# ---- yours -------------------------------------------------------------------------------------------


def decode_step(model: dict, token: int, cache: list) -> tuple[torch.Tensor, list]:
    """Feed one more token through the model, taking the earlier tokens' keys and values from the cache.

    model:  make_model()'s weights.
    token:  the newest token, an int. Its position is T_past, the number of tokens already in the cache.
    cache:  N_LAYER pairs (k, v), each (T_past, D): the keys and values of the T_past tokens before
            `token`, layer by layer. Leave it as it is and return a new list, so that one prefix's cache
            can be continued in two different ways.

    Returns (logits, new_cache):
        logits:     (VOCAB,), the scores for the token after `token`: full_forward(model, tokens)[-1],
                    where tokens are all T_past + 1 tokens fed so far.
        new_cache:  N_LAYER pairs (k, v), each (T_past + 1, D): the old rows, then this token's row.
    """
    position = len(cache)  # the cache's length?
    x = (model["tok_emb"][token] + model["pos_emb"][position])[None]  # (1, D)
    new_cache = []
    for i, layer in enumerate(model["layers"]):
        k_past, v_past = cache[i]  # (T_past, D) each
        h = rms_norm(x)
        q = h @ layer["W_q"]  # (1, D)
        k = torch.cat([k_past, h @ layer["W_k"]])  # (T_past + 1, D): the past rows, then this token's
        v = torch.cat([v_past, h @ layer["W_v"]])  # (T_past + 1, D)
        new_cache.append((k, v))
        weights = torch.softmax(q @ k.T / math.sqrt(D), dim=-1)  # (1, T_past + 1): nothing to mask
        x = x + weights @ v @ layer["W_o"]  # (1, D)
        x = x + mlp(layer, x)
    logits = rms_norm(x) @ model["unembed"]  # (1, VOCAB)
    return logits[0], new_cache


# ---- try it ------------------------------------------------------------------------------------------


def generate(model: dict, prompt: list[int], n_new: int) -> list[int]:
    """Greedy generation with your decode_step: prompt (≥ 1 token) -> prompt + n_new tokens."""
    tokens, cache = list(prompt), empty_cache(model)
    for token in prompt:
        logits, cache = decode_step(model, token, cache)
    for _ in range(n_new):
        tokens.append(int(logits.argmax()))
        logits, cache = decode_step(model, tokens[-1], cache)
    return tokens


def generate_by_recomputing(model: dict, prompt: list[int], n_new: int) -> list[int]:
    """The same greedy generation with one full_forward of the whole text per new token."""
    tokens = list(prompt)
    for _ in range(n_new):
        tokens.append(int(full_forward(model, tokens)[-1].argmax()))
    return tokens


if __name__ == "__main__":
    model = make_model()
    print("recomputing:", generate_by_recomputing(model, [1, 2, 3], 20))
    print("your cache: ", generate(model, [1, 2, 3], 20))
