"""The `causal-mask` exercise: the boolean mask of decoder self-attention, after a KV cache, and its mirror image.

The checks, simplest first: causal_mask(4) is a (4, 4) bool tensor; its diagonal is visible; its values
against kqv.nn.masks.allowed_positions("causal", …) for several T; causal_mask_after_cache for queries
at positions n_cached … n_cached+T_new−1 over every key; anticausal_mask against "anticausal"; and
sees_future, which must tell the masks that let a token see its own target from those that do not.

Hints come from comparing the learner's mask with the masks the known mistakes make (torch.tril with
the wrong diagonal, the upper triangle, keys × queries, a float or additive mask, a triangle in the
wrong corner after a cache).
"""

import math
from collections.abc import Callable

import numpy as np
import torch

from kqv.exercise.framework import Check, Failure, as_array, call, describe, filled_in, first_hint
from kqv.nn.masks import additive_mask, allowed_positions

NAME = "causal-mask"
STEP = "2. Attention"
TEACHES = "the causal mask of a GPT (True where query i may see key j ≤ i), after a KV cache, and why not its mirror"
FILENAME = "causal_mask.py"
SOLUTION = ["src/kqv/nn/masks.py: allowed_positions, sees_future"]

SKELETON = '''\
# kqv exercise: causal-mask
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
    raise NotImplementedError


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
    raise NotImplementedError


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
    raise NotImplementedError


def sees_future(mask):
    """Does this mask let some token see a later one, and so see the token it must predict?

    Args:
        mask: (T, T) torch.bool tensor for a sequence at positions 0 … T−1, True where query i may see key j.

    Returns:
        True if some query i may see some key j > i (the mask leaks: a model trained with it cheats),
        False otherwise. A token seeing itself (j = i) is not the future.
    """
    raise NotImplementedError
'''

BODIES = [  # the reference's bodies, in the skeleton's order
    """\
    return torch.ones(T, T, dtype=torch.bool).tril()  # j ≤ i: the lower-left triangle and the diagonal
""",
    """\
    query_positions = torch.arange(n_cached, n_cached + T_new)  # (T_new,)
    key_positions = torch.arange(n_cached + T_new)  # (n_cached + T_new,)
    return key_positions[None, :] <= query_positions[:, None]  # (T_new, n_cached + T_new)
""",
    """\
    return torch.ones(T, T, dtype=torch.bool).triu()  # j ≥ i: the upper-right triangle and the diagonal
""",
    """\
    return bool(mask.triu(diagonal=1).any())  # above the diagonal: key j > query i
""",
]


REFERENCE = filled_in(SKELETON, BODIES)


def skeleton() -> str:
    return SKELETON


def reference() -> str:
    return REFERENCE


# ---------------------------------------------------------------- kqv's masks and the mistaken ones


def kqv_mask(name: str, T_new: int, n_cached: int = 0) -> torch.Tensor:
    """kqv.nn.masks' (T_new, n_cached + T_new) bool mask `name` for queries after n_cached cached tokens."""
    return allowed_positions(name, torch.arange(n_cached, n_cached + T_new), torch.arange(n_cached + T_new))


def ones(rows: int, columns: int) -> torch.Tensor:
    return torch.ones(rows, columns, dtype=torch.bool)


def equal(got, mask: torch.Tensor) -> bool:
    """Whether `got` has the values of the bool `mask` (any dtype; shape and every entry equal)."""
    g = as_array(got)
    return g is not None and g.shape == tuple(mask.shape) and bool((g == mask.numpy()).all())


def square_mistakes(T: int) -> list[tuple[Callable[[], torch.Tensor], str]]:
    """(what a mistaken causal_mask(T) returns, the hint that names it)."""
    return [
        (lambda: ones(T, T).tril(-1), "the mask hides the diagonal: a token must see itself (j ≤ i, not j < i)"),
        (
            lambda: ones(T, T).triu(),
            "this is the upper triangle (or keys × queries): each token sees the future; the causal mask keeps "
            "the lower-left triangle, j ≤ i, and hides the upper-right",
        ),
        (lambda: ones(T, T).triu(1), "this is the strict upper triangle: each token sees only the future"),
        (lambda: ones(T, T).tril(1), "off by one: each token sees one future token (j ≤ i + 1); tril's diagonal is 0"),
        (lambda: ones(T, T), "nothing is hidden: every token sees every other, the future included"),
        (lambda: ~ones(T, T).tril(), "the mask is inverted: True marks the keys a query may see, False the hidden"),
        (lambda: ~ones(T, T).tril(-1), "the mask is inverted: True marks the keys a query may see, False the hidden"),
    ]


def bool_form_hints(got, allowed: torch.Tensor) -> list:
    """Hints for a mask whose values are right but whose form is not: float 0/1, additive 0/−∞, integers, numpy."""
    g = as_array(got)
    dtype = getattr(got, "dtype", None)
    floating = isinstance(dtype, torch.dtype) and dtype.is_floating_point

    def same(array) -> Callable[[], bool]:
        return lambda: g is not None and g.shape == array.shape and bool((g == array).all())

    seen = allowed.numpy().astype(np.float64)
    return [
        (lambda: isinstance(got, np.ndarray), "return a torch tensor (dtype=torch.bool), not a numpy array"),
        (lambda: floating and same(seen)(), "a float mask of 0s and 1s: return booleans, dtype=torch.bool"),
        (lambda: not floating and same(seen)(), "the mask holds integers: return booleans, dtype=torch.bool"),
        (same(as_array(additive_mask(allowed))), ADDITIVE),
        (same(np.where(allowed.numpy(), -math.inf, 0.0)), ADDITIVE_MIXED_UP),
    ]


ADDITIVE = (
    "an additive mask (0 where seen, −∞ where hidden): this function returns the boolean form, True where "
    "a query may see a key; attention turns it into −∞ scores itself"
)
ADDITIVE_MIXED_UP = (
    "an additive mask with the conventions mixed up (−∞ where seen, 0 where hidden): return booleans, "
    "True where a query may see a key"
)


def expect_mask(got, want: torch.Tensor, what: str, hints) -> None:
    """A Failure unless `got` is a torch.bool tensor equal to `want`: the first wrong entry, row and column named."""
    if not isinstance(got, torch.Tensor):
        raise Failure(f"{what} should be a torch tensor", f"torch.bool tensor of shape {tuple(want.shape)}",
                      describe(got), first_hint(hints))  # fmt: skip
    if tuple(got.shape) != tuple(want.shape):
        raise Failure(f"{what} has the wrong shape", f"shape {tuple(want.shape)}", f"shape {tuple(got.shape)}",
                      first_hint(hints))  # fmt: skip
    if got.dtype != torch.bool:
        raise Failure(f"{what} should hold booleans", "dtype torch.bool", f"dtype {got.dtype}", first_hint(hints))
    if not torch.equal(got, want):
        wrong = torch.argwhere(got != want)
        i, j = (int(x) for x in wrong[0])
        message = f"{what} is wrong at {len(wrong)} of {want.numel()} entries; first at row {i}, column {j}"
        raise Failure(message, f"mask[{i}, {j}] = {bool(want[i, j])}", f"{bool(got[i, j])}", first_hint(hints))


# ---------------------------------------------------------------- the checks


def check_shape_and_dtype(learner) -> None:
    got = call(learner, "causal_mask", 4)
    want = kqv_mask("causal", 4)
    hints = bool_form_hints(got, want)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (4, 4) or got.dtype != torch.bool:
        expect_mask(got, want, "causal_mask(4)", hints)


def check_diagonal(learner) -> None:
    got = call(learner, "causal_mask", 5)
    if not isinstance(got, torch.Tensor) or got.shape != (5, 5):
        raise Failure("causal_mask(5) should be a (5, 5) tensor", "shape (5, 5)", describe(got))
    diagonal = got.diagonal()
    if not diagonal.all():
        i = int(torch.argwhere(~diagonal.bool())[0])
        hint = "the mask hides the diagonal: a token must see itself (j ≤ i, not j < i)"
        message = f"query {i} cannot see key {i}, its own token: the diagonal of causal_mask(5) must be True"
        raise Failure(message, "diagonal all True", f"diagonal {diagonal.int().tolist()}", hint)


def check_values(learner) -> None:
    for T in (3, 6, 1, 2):
        got = call(learner, "causal_mask", T)
        want = kqv_mask("causal", T)
        hints = [(lambda got=got, mistake=mistake: equal(got, mistake()), hint) for mistake, hint in square_mistakes(T)]
        expect_mask(got, want, f"causal_mask({T})", hints + bool_form_hints(got, want))


def cache_hints(got, T_new: int, n_cached: int) -> list:
    """Hints for a mistaken causal_mask_after_cache(T_new, n_cached): its shape, then its values."""
    Tk = n_cached + T_new
    shape = tuple(getattr(got, "shape", ()))
    by_shape = [
        (
            (Tk, T_new),
            f"the mask is keys × queries, ({Tk}, {T_new}): the rows are the {T_new} queries, the columns the {Tk} keys",
        ),
        ((T_new, T_new), f"only the new keys: a query also sees the {n_cached} cached ones, so there are {Tk} columns"),
        ((T_new, n_cached), f"only the cached keys: the {T_new} new tokens are keys too, so there are {Tk} columns"),
    ]
    top_left = (
        f"the triangle starts in the top-left corner, as if the queries were at positions 0 … {T_new - 1}; they are at "
        f"{n_cached} … {Tk - 1}: query i sees keys j ≤ n_cached + i (tril's diagonal=n_cached)"
    )
    by_value = [
        (ones(T_new, Tk).tril(), top_left),
        (ones(T_new, Tk).tril(n_cached - 1), "the mask hides the diagonal: the query at position p must see key p"),
        (ones(T_new, Tk).tril(n_cached + 1), "off by one: each query sees one future key"),
        (ones(T_new, Tk).triu(n_cached), "this is the upper triangle: each query sees the future"),
    ]
    hints = [(lambda wrong=wrong: shape == wrong != (T_new, Tk), hint) for wrong, hint in by_shape]
    return hints + [(lambda mistake=mistake: equal(got, mistake), hint) for mistake, hint in by_value]


def check_after_cache(learner) -> None:
    for T_new, n_cached in ((3, 4), (1, 5), (4, 0), (2, 1)):
        got = call(learner, "causal_mask_after_cache", T_new, n_cached)
        want = kqv_mask("causal", T_new, n_cached)
        what = f"causal_mask_after_cache(T_new={T_new}, n_cached={n_cached})"
        expect_mask(got, want, what, cache_hints(got, T_new, n_cached) + bool_form_hints(got, want))


def check_anticausal(learner) -> None:
    for T in (4, 6, 1):
        got = call(learner, "anticausal_mask", T)
        want = kqv_mask("anticausal", T)
        mistakes = [
            (ones(T, T).triu(1), "the mask hides the diagonal: under this mask too a token sees itself (j ≥ i)"),
            (ones(T, T).tril(), "this is the causal mask: the anticausal one keeps the upper-right (j ≥ i)"),
            (~ones(T, T).triu(), "the mask is inverted: True marks the keys a query may see"),
            (ones(T, T).triu(-1), "off by one: each token also sees the token before it"),
        ]
        hints = [(lambda got=got, mistake=mistake: equal(got, mistake), hint) for mistake, hint in mistakes]
        expect_mask(got, want, f"anticausal_mask({T})", hints + bool_form_hints(got, want))


def question_masks() -> list[tuple[str, torch.Tensor]]:
    """(name, (T, T) mask) for sees_future: masks that leak and masks that do not, T = 5."""
    T = 5
    one_future = ones(T, T).tril()
    one_future[1, 3] = True  # query 1 sees key 3
    return [
        ("causal", kqv_mask("causal", T)),
        ("anticausal", kqv_mask("anticausal", T)),
        ("none (every key)", ones(T, T)),
        ("window:2", kqv_mask("window:2", T)),
        ("each token sees only itself", torch.eye(T, dtype=torch.bool)),
        ("causal without the diagonal", ones(T, T).tril(-1)),
        ("causal plus one future key (query 1 sees key 3)", one_future),
        ("causal, off by one (j ≤ i + 1)", ones(T, T).tril(1)),
    ]


def future_rules() -> list[tuple[Callable[[torch.Tensor], bool], str]]:
    """(a mistaken sees_future, the hint that names it)."""
    above = ones(5, 5).triu(1)  # the future of a (5, 5) mask: j > i
    causal = kqv_mask("causal", 5)
    return [
        (lambda m: m.triu().any(), "the diagonal is not the future: key i is query i's own token (j > i, not j ≥ i)"),
        (lambda m: m.tril(-1).any(), "that looks at the past (j < i, lower-left); the future of query i is keys j > i"),
        (lambda m: m[above].all(), "one future key is enough to leak: any(), not all()"),
        (
            lambda m: not m.triu(1).any(),
            "the answer is inverted: True means the mask leaks, some query sees a later key",
        ),
        (
            lambda m: not torch.equal(m, causal),
            "a mask can differ from the causal one and still not leak (a window, a hidden diagonal): look for j > i",
        ),
    ]


def check_sees_future(learner) -> None:
    masks = question_masks()
    answers = []
    for name, mask in masks:
        got = call(learner, "sees_future", mask.clone())
        try:
            answers.append(bool(got))
        except Exception:
            raise Failure(f"sees_future({name}) should return True or False", "a bool", describe(got)) from None
    hints = [
        (lambda rule=rule: answers == [bool(rule(mask)) for _, mask in masks], hint) for rule, hint in future_rules()
    ]
    for (name, mask), got in zip(masks, answers, strict=True):
        want = bool(mask.triu(1).any())
        if got != want:
            why = "some query sees a later key" if want else "no query sees a later key"
            raise Failure(f"sees_future is wrong for the mask '{name}': {why}", f"{want}", f"{got}", first_hint(hints))


CHECKS = [
    Check("shape and dtype", "causal_mask(4) is a (4, 4) torch.bool tensor", check_shape_and_dtype),
    Check("diagonal", "causal_mask(5) lets every token see itself", check_diagonal),
    Check("values", "causal_mask(T) for T = 3, 6, 1, 2 is kqv's causal mask (j ≤ i)", check_values),
    Check("after a cache", "queries at n_cached … n_cached+T_new−1 see every key j ≤ n_cached + i", check_after_cache),
    Check("anticausal", "anticausal_mask(T) for T = 4, 6, 1 is kqv's anticausal mask (j ≥ i)", check_anticausal),
    Check("sees the future", "sees_future tells the masks that leak from those that do not", check_sees_future),
]
