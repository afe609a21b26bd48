"""Exercise kv-cache: one decoding step that appends to a KV cache and gives the logits of a full recompute.

The learner's file holds a tiny two-layer causal language model as plain tensors (given, with its
`full_forward`) and one function to write:

    decode_step(model, token, cache) -> (logits (VOCAB,), new_cache)
    cache: a list of N_LAYER pairs (k, v), each (T_past, D); the new token's position is T_past

The checks run the learner's steps on the checker's own copy of the model (the same source text as the
file's given part, executed here) and compare them with full_forward row by row. A failing value is
matched against what each known mistake would have returned (`mistaken_step`), which names the hint.
"""

import math
from types import SimpleNamespace

import torch

from kqv.exercise.framework import Check, Failure, call, close, describe, expect_close, expect_shape, first_hint

NAME = "kv-cache"
STEP = "3. GPT"
TEACHES = "decode one token at a time: append its key and value to a cache, attend over the cache"
FILENAME = "kv_cache.py"
SOLUTION = [
    "src/kqv/nn/kv_cache.py: LayerCache.append",
    "src/kqv/models/gpt.py: GPT.forward (positions start at cache.length)",
    "src/kqv/generate/sampling.py: Decoder",
]

HEADER = '''# kqv exercise: kv-cache
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

'''

MODEL_SOURCE = '''
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
'''

SIGNATURE = '''

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
'''

TODO = """    raise NotImplementedError  # about 15 lines: embed at its position; per layer q, k, v, append, attend
"""

SOLUTION_BODY = """    position = cache[0][0].shape[0]  # T_past: the tokens before this one
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
"""

DEMO = '''

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
'''


def skeleton() -> str:
    return HEADER + MODEL_SOURCE.lstrip("\n") + SIGNATURE + TODO + DEMO


def reference() -> str:
    return HEADER + MODEL_SOURCE.lstrip("\n") + SIGNATURE + SOLUTION_BODY + DEMO


def given_model_code() -> SimpleNamespace:
    """The learner file's given part (constants, make_model, rms_norm, mlp, full_forward, empty_cache), run here."""
    namespace: dict = {}
    exec(compile("import math\nimport torch\n" + MODEL_SOURCE, "<kv-cache model>", "exec"), namespace)
    return SimpleNamespace(**{k: v for k, v in namespace.items() if not k.startswith("__")})


GIVEN = given_model_code()
VOCAB, D, N_LAYER, MAX_LEN = GIVEN.VOCAB, GIVEN.D, GIVEN.N_LAYER, GIVEN.MAX_LEN
MODEL_SEED = 2  # the checks' model; the learner's file uses make_model(0) for its own demo
RTOL, ATOL = 1e-4, 1e-5  # float32: a step and a full recompute add up in different orders


# ---- the reference step and the known mistakes -------------------------------------------------------

MISTAKES = {
    "attends without itself": "the new token does not attend to itself: append its k and v to the layer's cache "
    "first, then attend over all T_past + 1 rows",
    "position 0": "the new token's position is always 0: it is T_past, the number of tokens already in the cache "
    "(cache[0][0].shape[0])",
    "position + 1": "the position is one too far: the first token sits at position 0, so the new token's position is "
    "T_past, the rows cached before this step, not T_past + 1",
    "position len(cache)": "the position is len(cache), which counts layers, not tokens: use cache[0][0].shape[0], "
    "the number of rows already cached",
    "k and v swapped": "k and v are swapped: the scores are q · kᵀ, and the output is the weighted sum of the rows "
    "of v",
    "query is a key": "the query is a key (h @ W_k, or a row of the cache): it must be the new token's own h @ W_q",
    "no scale": "the scores are not divided by √D: q @ k.T / math.sqrt(D), as in full_forward",
    "softmax over keys' axis 0": "the softmax runs over the wrong axis: the scores are (1, T_past + 1), one row for "
    "the one query; normalise that row over the keys (dim=-1)",
    "cache keeps the newest only": "the cache keeps only the newest token: torch.cat its row after the old rows "
    "instead of replacing them",
    "cache drops the token": "your cache drops the last token: the cache you return must hold this token's k and v "
    "too, after the old rows (one more row per layer)",
}
VALUE_MISTAKES = list(MISTAKES)  # each one a variant of mistaken_step, tried in this order


def mistaken_step(model: dict, token: int, cache: list, mistake: str | None = None) -> tuple[torch.Tensor, list]:
    """decode_step as it should be (mistake None), or with one of MISTAKES made -> (logits (VOCAB,), new cache)."""
    t_past = cache[0][0].shape[0]
    position = {"position 0": 0, "position + 1": t_past + 1, "position len(cache)": len(cache)}.get(mistake, t_past)
    x = (model["tok_emb"][token] + model["pos_emb"][position])[None]  # (1, D)
    new_cache = []
    for layer, (k_past, v_past) in zip(model["layers"], cache, strict=True):
        h = GIVEN.rms_norm(x)
        q, k_new, v_new = h @ layer["W_q"], h @ layer["W_k"], h @ layer["W_v"]  # (1, D) each
        if mistake == "query is a key":
            q = k_new
        k, v = torch.cat([k_past, k_new]), torch.cat([v_past, v_new])  # (T_past + 1, D)
        keys, values = (k_past, v_past) if mistake == "attends without itself" else (k, v)
        if mistake == "k and v swapped":
            keys, values = values, keys
        scores = q @ keys.T / (1.0 if mistake == "no scale" else math.sqrt(D))  # (1, T)
        weights = torch.softmax(scores, dim=0 if mistake == "softmax over keys' axis 0" else -1)
        x = x + weights @ values @ layer["W_o"]
        x = x + GIVEN.mlp(layer, x)
        new_cache.append(
            {"cache keeps the newest only": (k_new, v_new), "cache drops the token": (k_past, v_past)}.get(
                mistake, (k, v)
            )
        )
    return (GIVEN.rms_norm(x) @ model["unembed"])[0], new_cache


def model_for_checks() -> dict:
    return GIVEN.make_model(MODEL_SEED)


def reference_run(model: dict, tokens: list[int], mistake: str | None = None) -> tuple[torch.Tensor, list]:
    """Feed tokens one by one from an empty cache -> (logits of every step (T, VOCAB), the last cache)."""
    cache, rows = GIVEN.empty_cache(model), []
    for token in tokens:
        logits, cache = mistaken_step(model, token, cache, mistake)
        rows.append(logits)
    return torch.stack(rows), cache


def random_tokens(n: int, seed: int) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


# ---- reading what the learner returns ----------------------------------------------------------------


def learner_step(learner, model: dict, token: int, cache: list) -> tuple[object, list]:
    """The learner's decode_step -> (logits, cache as a list of (k, v) tensor pairs), or a Failure on its form."""
    result = call(learner, "decode_step", model, token, cache)
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise Failure(
            "decode_step should return a pair (logits, new_cache)", "(tensor (VOCAB,), list of N_LAYER (k, v))",
            describe(result), "end with: return logits, new_cache",
        )  # fmt: skip
    logits, new_cache = result
    if not isinstance(new_cache, list | tuple) or len(new_cache) != N_LAYER:
        got = f"{type(new_cache).__name__} of {len(new_cache)}" if hasattr(new_cache, "__len__") else "no list"
        raise Failure(
            f"the new cache should be a list of {N_LAYER} (k, v) pairs, one per layer", f"list of {N_LAYER}", got,
            "append one (k, v) pair per layer to a new list, in layer order",
        )  # fmt: skip
    for i, pair in enumerate(new_cache):
        if not isinstance(pair, tuple | list) or len(pair) != 2 or not all(torch.is_tensor(t) for t in pair):
            raise Failure(
                f"layer {i} of the new cache should be a pair (k, v) of tensors", "(k, v)", describe(pair),
                "new_cache.append((k, v)) with k and v the (T_past + 1, D) tensors",
            )  # fmt: skip
    return logits, [tuple(pair) for pair in new_cache]


def learner_run(learner, model: dict, tokens: list[int]) -> tuple[list, list]:
    """Feed tokens one by one with the learner's decode_step -> (logits per step, cache after each step)."""
    cache, logits, caches = GIVEN.empty_cache(model), [], []
    for token in tokens:
        step_logits, cache = learner_step(learner, model, token, list(cache))  # a copy: `caches` keeps each step's
        logits.append(step_logits)
        caches.append(cache)
    return logits, caches


def rows_so_far(logits: list, t: int) -> object:
    """The learner's logits of steps 0 … t as one (t + 1, VOCAB) array, or None if they do not stack."""
    try:
        return torch.stack([torch.as_tensor(row).detach().reshape(VOCAB) for row in logits[: t + 1]])
    except (RuntimeError, TypeError, ValueError):
        return None


def value_hints(model: dict, tokens: list[int], got_rows) -> list:
    """(does the learner's run match mistake m's run over the same tokens?, hint) for each value mistake."""

    def matches(mistake: str) -> bool:
        rows, _ = reference_run(model, tokens, mistake)
        return got_rows is not None and close(got_rows, rows, RTOL, ATOL)

    return [(lambda m=m: matches(m), MISTAKES[m]) for m in VALUE_MISTAKES]


# ---- the checks --------------------------------------------------------------------------------------


def check_shapes(learner) -> None:
    model = model_for_checks()
    logits, cache = learner_step(learner, model, 3, GIVEN.empty_cache(model))
    expect_shape(
        logits, (VOCAB,), "the logits of one step",
        [(lambda: tuple(logits.shape) == (1, VOCAB), "return the one row, logits[0], not the (1, VOCAB) matrix")],
    )  # fmt: skip
    for i, (k, v) in enumerate(cache):
        for name, t in (("k", k), ("v", v)):
            expect_shape(
                t, (1, D), f"layer {i}'s {name} in the cache after one step from an empty cache",
                [(lambda t=t: tuple(t.shape) == (0, D), MISTAKES["cache drops the token"]),
                 (lambda t=t: tuple(t.shape) == (D,), "keep the cache 2-D, one (1, D) row per token"),
                 (lambda t=t: tuple(t.shape) == (D, 1), "the cache rows are (1, D), one row per token: concatenate "
                  "along dim 0")],
            )  # fmt: skip


def check_first_step(learner) -> None:
    model = model_for_checks()
    token = 5
    logits, _ = learner_step(learner, model, token, GIVEN.empty_cache(model))
    expected = GIVEN.full_forward(model, [token])[-1]
    expect_close(
        logits, expected, f"the logits vector of the first step (token {token}, from an empty cache)",
        value_hints(model, [token], rows_so_far([logits], 0)), RTOL, ATOL,
    )  # fmt: skip


def check_cache_grows(learner) -> None:
    model = model_for_checks()
    tokens = random_tokens(5, seed=1)
    _, caches = learner_run(learner, model, tokens)
    counts = [[(len(k) if k.dim() else 0, len(v) if v.dim() else 0) for k, v in cache] for cache in caches]
    wrong = [(t, i) for t, per_layer in enumerate(counts) for i, rows in enumerate(per_layer) if rows != (t + 1, t + 1)]
    if wrong:
        t, i = wrong[0]
        raise_cache_size(t, i, [per_layer[i] for per_layer in counts[: t + 1]])


def raise_cache_size(t: int, layer: int, seen: list[tuple[int, int]]) -> None:
    """Failure for layer `layer`'s cache after step t + 1; seen: its (k rows, v rows) after steps 1 … t + 1."""
    k_rows, v_rows = seen[-1]
    hints = [
        (lambda: all(rows == (0, 0) for rows in seen), MISTAKES["cache drops the token"]),
        (lambda: all(rows == (1, 1) for rows in seen), MISTAKES["cache keeps the newest only"]),
        (lambda: all(rows == (2 * s + 2, 2 * s + 2) for s, rows in enumerate(seen)),
         "the cache grows by two rows a step: append this token's k and v once per layer"),
        (lambda: k_rows == t + 1, "k grows but v does not: append this token's v too"),
        (lambda: v_rows == t + 1, "v grows but k does not: append this token's k too"),
    ]  # fmt: skip
    raise Failure(
        f"after {t + 1} step{'s' * (t > 0)} layer {layer}'s cache holds {k_rows} rows of k and {v_rows} of v",
        f"{t + 1} rows each (one per token fed)", f"k: {k_rows}, v: {v_rows}", first_hint(hints),
    )  # fmt: skip


def check_every_step(learner) -> None:
    model = model_for_checks()
    tokens = random_tokens(12, seed=2)
    logits, _ = learner_run(learner, model, tokens)
    expected = GIVEN.full_forward(model, tokens)  # (12, VOCAB)
    for t in range(len(tokens)):
        if close(logits[t], expected[t], RTOL, ATOL):
            continue
        expect_close(
            logits[t], expected[t], f"the logits vector of step {t + 1} (position {t}, after tokens {tokens[: t + 1]})",
            value_hints(model, tokens[: t + 1], rows_so_far(logits, t)), RTOL, ATOL,
        )  # fmt: skip


def check_cache_contents(learner) -> None:
    model = model_for_checks()
    tokens = random_tokens(4, seed=3)
    _, caches = learner_run(learner, model, tokens)
    _, expected = reference_run(model, tokens)
    inputs = layer_inputs(model, tokens)  # per layer, (h, x): what a cache of inputs would hold
    for i, ((k, v), (k_ref, v_ref)) in enumerate(zip(caches[-1], expected, strict=True)):
        for name, got, want, other in (("k", k, k_ref, v_ref), ("v", v, v_ref, k_ref)):
            h, x = inputs[i]
            expect_close(
                got, want, f"layer {i}'s {name} in the cache after {len(tokens)} tokens",
                [(lambda got=got, other=other: close(got, other, RTOL, ATOL),
                  "the cache holds (v, k): keep each layer's pair in the order (k, v)"),
                 (lambda got=got, h=h, x=x: close(got, h, RTOL, ATOL) or close(got, x, RTOL, ATOL),
                  "the cache holds the layer's input, not its keys and values: store k = h @ W_k and v = h @ W_v, "
                  "so that no earlier token is projected again")],
                RTOL, ATOL,
            )  # fmt: skip


def layer_inputs(model: dict, tokens: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, (rms_norm(x), x) for all tokens: the residual stream entering the layer, (T, D) each."""
    x = model["tok_emb"][tokens] + model["pos_emb"][: len(tokens)]
    later = torch.ones(len(tokens), len(tokens), dtype=torch.bool).triu(1)
    inputs = []
    for layer in model["layers"]:
        h = GIVEN.rms_norm(x)
        inputs.append((h, x))
        q, k, v = h @ layer["W_q"], h @ layer["W_k"], h @ layer["W_v"]
        scores = (q @ k.T / math.sqrt(D)).masked_fill(later, float("-inf"))
        x = x + torch.softmax(scores, dim=-1) @ v @ layer["W_o"]
        x = x + GIVEN.mlp(layer, x)
    return inputs


def check_cache_left_as_given(learner) -> None:
    model = model_for_checks()
    prefix = random_tokens(6, seed=4)
    _, given = reference_run(model, prefix)
    given = list(given)
    kept = [(k.clone(), v.clone()) for k, v in given]
    first, second = 2, 9
    learner_step(learner, model, first, given)
    changed = len(given) != len(kept) or any(
        not (torch.equal(k, k0) and torch.equal(v, v0)) for (k, v), (k0, v0) in zip(given, kept, strict=False)
    )
    if changed:
        raise Failure(
            "decode_step changed the cache it was given",
            f"the given cache as it was: {rows_of(kept)}", f"after one step it is {rows_of(given)}",
            "build a new list (new_cache = []; new_cache.append((k, v))) and leave the given one as it was: then one "
            "prefix's cache can be continued in two different ways, as beam search does",
        )  # fmt: skip
    logits, _ = learner_step(learner, model, second, given)
    expect_close(
        logits, GIVEN.full_forward(model, [*prefix, second])[-1],
        f"the logits vector of token {second} fed after token {first}'s step, from the same prefix's cache",
        rtol=RTOL, atol=ATOL,
    )  # fmt: skip


def rows_of(cache: list) -> str:
    """What a cache holds, "layer 0 k (6, 16) v (6, 16), layer 1 …", whatever a learner's step left in it."""
    parts = []
    for i, pair in enumerate(cache):
        shapes = [tuple(t.shape) if torch.is_tensor(t) else type(t).__name__ for t in pair] if len(pair) == 2 else []
        parts.append(f"layer {i} k {shapes[0]} v {shapes[1]}" if shapes else f"layer {i} {describe(pair)}")
    return ", ".join(parts)


def greedy_by_recomputing(model: dict, prompt: list[int], n_new: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(n_new):
        tokens.append(int(GIVEN.full_forward(model, tokens)[-1].argmax()))
    return tokens


def greedy_with(step, model: dict, prompt: list[int], n_new: int) -> list[int]:
    """Greedy generation with step(model, token, cache) -> (logits, cache)."""
    tokens, cache = list(prompt), GIVEN.empty_cache(model)
    for token in prompt:
        logits, cache = step(model, token, cache)
    for _ in range(n_new):
        tokens.append(int(torch.as_tensor(logits).reshape(-1).argmax()))
        if len(tokens) < MAX_LEN:
            logits, cache = step(model, tokens[-1], cache)
    return tokens


def check_greedy(learner) -> None:
    model, prompt, n_new = model_for_checks(), [1, 5, 2], 20
    expected = greedy_by_recomputing(model, prompt, n_new)
    got = greedy_with(lambda m, t, c: learner_step(learner, m, t, c), model, prompt, n_new)
    if got == expected:
        return
    first = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
    hints = [
        (lambda m=m: greedy_with(lambda mm, t, c, m=m: mistaken_step(mm, t, c, m), model, prompt, n_new) == got,
         MISTAKES[m])
        for m in VALUE_MISTAKES
    ]  # fmt: skip
    raise Failure(
        f"greedy generation with your decode_step parts from full recomputation at token {first} "
        f"(new token {first - len(prompt) + 1} of {n_new})",
        f"{expected}", f"{got}", first_hint(hints),
    )  # fmt: skip


CHECKS: list[Check] = [
    Check("shapes", "one step from an empty cache: logits (VOCAB,), and N_LAYER (k, v) pairs of (1, D)", check_shapes),
    Check("first step", "the first step's logits equal full_forward of that one token", check_first_step),
    Check("cache grows", "over 5 steps, every layer's k and v grow by one row per step", check_cache_grows),
    Check(
        "every step",
        "over a random 12-token text, each step's logits equal full_forward's row for that prefix (1e-5)",
        check_every_step,
    ),
    Check(
        "cache contents",
        "after 4 steps, row t of each layer's k and v is token t's key and value",
        check_cache_contents,
    ),
    Check(
        "cache left as given",
        "a step leaves the cache it was given unchanged, so the same prefix can be continued with another token",
        check_cache_left_as_given,
    ),
    Check(
        "greedy",
        "20 greedy tokens with your steps are the tokens that full recomputation gives",
        check_greedy,
        slow=True,
    ),
]
