"""The `positional-encoding` exercise: the sinusoidal table of the 2017 Transformer, and why it encodes offsets.

The checks, simplest first: the shape of sinusoidal_table(4, 6); its first row (position 0: sin 0 = 0,
cos 0 = 1); the worked example sinusoidal_table(2, 4); the values against kqv.nn.positional's table for
several sizes; and the relative-position property: the learner's shift_rotation(k, d_model), applied to
every pair of columns of kqv's table, moves each position k places along.

d_model is even, as in kqv (sinusoidal_table refuses an odd width: the columns come in sin/cos pairs).
Hints come from comparing the learner's table with the tables the known mistakes make.
"""

from collections.abc import Callable

import numpy as np
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
    first_hint,
)
from kqv.nn.positional import sinusoidal_table

NAME = "positional-encoding"
STEP = "2. Attention"
TEACHES = "the sinusoidal positional table PE(pos, 2i) = sin(pos/10000^(2i/d)), PE(pos, 2i+1) = cos(…)"
FILENAME = "positional_encoding.py"
SOLUTION = ["src/kqv/nn/positional.py: sinusoidal_table"]

SKELETON = '''\
# kqv exercise: positional-encoding
"""Sinusoidal positional encoding (Vaswani et al. 2017, §3.5).

Attention by itself is blind to order: shuffle the tokens and each gets the same output, shuffled
along. The 2017 Transformer adds to each token's embedding a vector that depends only on its
position pos = 0, 1, 2, …:

    PE(pos, 2i)   = sin(pos / 10000^(2i / d_model))
    PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model))

Each pair of columns (2i, 2i+1) is one frequency, ω_i = 1 / 10000^(2i / d_model): from 1 radian
per position (i = 0) down to almost 1/10000 (the last pair). The even column holds its sine, the
odd column its cosine: sin and cos interleave.

Worked example, d_model = 4 (ω_0 = 1, ω_1 = 1/10000^(2/4) = 0.01):

    pos 0:  sin 0 = 0        cos 0 = 1        sin 0 = 0           cos 0 = 1
    pos 1:  sin 1 = 0.8415   cos 1 = 0.5403   sin 0.01 = 0.0100   cos 0.01 = 0.99995

Check your work with:

    kqv exercise check positional_encoding.py

The checks go from the simplest (the table's shape) to the strongest (your shift_rotation moves
every position of kqv's table k places along).
"""

import torch


def sinusoidal_table(max_len, d_model):
    """The sinusoidal positional encodings of positions 0 … max_len − 1.

    Args:
        max_len: int ≥ 1, the number of positions (the rows).
        d_model: even int ≥ 2, the width of a token embedding (the columns): d_model / 2 frequencies,
            each a sin column and a cos column.

    Returns:
        (max_len, d_model) float tensor: row pos is PE(pos, ·), with
        PE(pos, 2i) = sin(pos / 10000^(2i / d_model)) and PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model)).

    Useful: torch.arange(max_len)[:, None] (a column of positions), torch.arange(0, d_model, 2) (the
    values 2i), broadcasting (max_len, 1) against (d_model / 2,), and table[:, 0::2] and table[:, 1::2]
    (the even and the odd columns).
    """
    raise NotImplementedError


def shift_rotation(k, d_model):
    """Follow-up: why sines and cosines? Moving k positions along is the same rotation everywhere.

    For one frequency ω_i, the pair (PE(pos, 2i), PE(pos, 2i+1)) = (sin a, cos a) with a = pos·ω_i is
    a point on the unit circle. Moving k positions along adds b = k·ω_i to the angle, and

        sin(a + b) = sin a · cos b + cos a · sin b
        cos(a + b) = cos a · cos b − sin a · sin b

    so the pair at pos + k is a 2 × 2 matrix times the pair at pos, a matrix that depends on k and ω_i
    but not on pos. A model can therefore learn "look k tokens back" as one fixed linear map, whatever
    the position: the paper's reason for choosing this function (§3.5).

    Args:
        k: int, the shift in positions (may be 0 or negative).
        d_model: even int ≥ 2.

    Returns:
        (d_model // 2, 2, 2) float tensor R: for every position pos and every frequency i,

            R[i] @ [PE(pos, 2i), PE(pos, 2i+1)]  ==  [PE(pos + k, 2i), PE(pos + k, 2i+1)]

    Useful: torch.stack to build the matrices from cos(b) and sin(b), each of shape (d_model // 2,).
    """
    raise NotImplementedError
'''

BODIES = [  # the reference's bodies, in the skeleton's order
    """\
    positions = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model / 2,): 0, 2, 4, …
    angle = positions / 10000 ** (two_i / d_model)  # (max_len, d_model / 2): pos · ω_i
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)  # even columns
    table[:, 1::2] = torch.cos(angle)  # odd columns
    return table.float()
""",
    """\
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    b = k / 10000 ** (two_i / d_model)  # (d_model / 2,): the angle k · ω_i
    cos, sin = torch.cos(b), torch.sin(b)
    rotation = torch.stack([torch.stack([cos, sin], dim=-1), torch.stack([-sin, cos], dim=-1)], dim=-2)
    return rotation.float()  # (d_model / 2, 2, 2): rows [cos b, sin b] and [−sin b, cos b]
""",
]


REFERENCE = filled_in(SKELETON, BODIES)


def skeleton() -> str:
    return SKELETON


def reference() -> str:
    return REFERENCE


# ---------------------------------------------------------------- the table and the mistaken ones

RTOL, ATOL = 1e-5, 2e-5  # a float32 table at positions < 64 is within 1e-5 of the float64 one


def table_from(angle: torch.Tensor, layout: str = "interleaved", sin_first: bool = True) -> torch.Tensor:
    """(max_len, d/2) angles -> (max_len, d): sin/cos interleaved (or in halves), sin in the even columns."""
    first, second = (torch.sin(angle), torch.cos(angle)) if sin_first else (torch.cos(angle), torch.sin(angle))
    if layout == "halves":
        return torch.cat([first, second], dim=-1)
    return torch.stack([first, second], dim=-1).flatten(-2)


def mistaken_tables(max_len: int, d_model: int) -> list[tuple[Callable[[], torch.Tensor], str]]:
    """(what a known mistake makes of sinusoidal_table(max_len, d_model), the hint that names it)."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (n, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,)
    i = two_i / 2
    column = torch.arange(d_model, dtype=torch.float64)  # (d,)

    def per_column(exponent: torch.Tensor) -> torch.Tensor:  # every column its own frequency 10000^(−exponent)
        angle = pos / 10000**exponent  # (n, d)
        return torch.where(column.long() % 2 == 0, torch.sin(angle), torch.cos(angle))

    return [
        (
            lambda: table_from(pos / 10000 ** (two_i / d_model), sin_first=False),
            "sin and cos are swapped: the even columns (2i) hold the sine, the odd ones (2i+1) the cosine",
        ),
        (
            lambda: table_from(pos / 10000 ** (two_i / d_model), layout="halves"),
            "sin and cos are concatenated in halves ([sin … sin, cos … cos]); they interleave: "
            "column 2i is a sine, column 2i+1 the cosine of the same frequency",
        ),
        (
            lambda: table_from((pos + 1) / 10000 ** (two_i / d_model)),
            "the first row is position 1: positions start at 0, torch.arange(max_len)",
        ),
        (
            lambda: table_from(pos * 10000 ** (two_i / d_model)),
            "the frequencies are inverted: pos · 10000^(2i/d_model); the angle is pos / 10000^(2i/d_model)",
        ),
        (
            lambda: per_column(column / d_model),
            "every column has its own frequency (exponent j/d_model for column j); the pair 2i, 2i+1 shares one, "
            "with exponent 2i/d_model",
        ),
        (
            lambda: per_column(2 * column / d_model),
            "the exponent uses the column index j as i (2j/d_model); columns 2i and 2i+1 share the exponent 2i/d_model",
        ),
        (
            lambda: table_from(pos / 10000 ** (i / d_model)),
            "the exponent is i/d_model; it is 2i/d_model, with 2i = 0, 2, 4, … the even column's index",
        ),
        (
            lambda: table_from(pos.expand(max_len, d_model // 2)),
            "every pair has frequency 1: the exponent 2i/d_model came out 0 (integer division? compute it in "
            "floating point)",
        ),
        (
            lambda: table_from(torch.deg2rad(pos / 10000 ** (two_i / d_model))),
            "the angles are in degrees: torch.sin and torch.cos take radians",
        ),
    ]


def table_hints(got, max_len: int, d_model: int) -> list:
    return [
        (lambda mistake=mistake: close(got, mistake(), RTOL, ATOL), hint)
        for mistake, hint in mistaken_tables(max_len, d_model)
    ]


def learners_table(learner, max_len: int, d_model: int):
    got = call(learner, "sinusoidal_table", max_len, d_model)
    if as_array(got) is None:
        raise Failure(f"sinusoidal_table({max_len}, {d_model}) should return a tensor", "a float tensor", describe(got))
    return got


# ---------------------------------------------------------------- the checks


def check_shape(learner) -> None:
    got = learners_table(learner, 4, 6)
    shape = tuple(as_array(got).shape)
    hints = [
        (lambda: shape == (4, 3), "only d_model / 2 columns: each frequency has a sin column and a cos column"),
        (lambda: shape == (6, 4), "transposed: the rows are the max_len positions, the columns the d_model features"),
        (
            lambda: shape == (4, 12),
            "twice d_model columns: there are d_model / 2 frequencies, 2i = 0, 2, …, d_model − 2",
        ),
    ]
    expect_shape(got, (4, 6), "sinusoidal_table(4, 6)", hints)


def check_first_row(learner) -> None:
    got = learners_table(learner, 4, 6)
    first = as_array(got)[0]
    want = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    if not np.allclose(first, want, rtol=RTOL, atol=ATOL):
        hints = table_hints(got, 4, 6)
        message = "the first row, position 0, should be sin 0 = 0 in the even columns and cos 0 = 1 in the odd"
        raise Failure(message, f"{want.tolist()}", f"{np.round(first, 4).tolist()}", first_hint(hints))


def check_known_value(learner) -> None:
    got = learners_table(learner, 2, 4)
    want = sinusoidal_table(2, 4)  # row 1: sin 1, cos 1, sin 0.01, cos 0.01
    expect_close(
        got, want, "sinusoidal_table(2, 4) (the docstring's worked example)", table_hints(got, 2, 4), RTOL, ATOL
    )


def check_values(learner) -> None:
    for max_len, d_model in ((50, 16), (7, 2), (33, 64)):
        got = learners_table(learner, max_len, d_model)
        what = f"sinusoidal_table({max_len}, {d_model})"
        expect_close(got, sinusoidal_table(max_len, d_model), what, table_hints(got, max_len, d_model), RTOL, ATOL)


def rotation(k: float, d_model: int, sign: float = 1.0) -> torch.Tensor:
    """(d/2, 2, 2): [[cos b, sign·sin b], [−sign·sin b, cos b]] with b = k·ω_i."""
    b = k / 10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    cos, sin = torch.cos(b), sign * torch.sin(b)
    return torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)


def check_relative_position(learner) -> None:
    max_len = 40
    for k, d_model in ((1, 8), (5, 16), (-3, 8)):
        got = call(learner, "shift_rotation", k, d_model)
        what = f"shift_rotation({k}, {d_model})"
        shape = tuple(as_array(got).shape) if as_array(got) is not None else None
        first_axis = "the frequency axis comes first: R[i] is frequency i's 2 × 2 matrix"
        hints = [(lambda shape=shape, d=d_model: shape == (2, 2, d // 2), first_axis)]
        expect_shape(got, (d_model // 2, 2, 2), what, hints)
        table = sinusoidal_table(max_len, d_model).double()
        pairs = table.view(max_len, d_model // 2, 2)  # (pos, i, [sin, cos])
        R = torch.as_tensor(as_array(got))  # (d/2, 2, 2)
        lo, hi = max(0, -k), min(max_len, max_len - k)  # positions whose pos + k is in the table
        moved = torch.einsum("iab,pib->pia", R, pairs[lo:hi]).reshape(hi - lo, d_model)  # R[i] @ pair(pos)
        want = table[lo + k : hi + k]  # PE(pos + k)
        hints = [
            (lambda R=R, k=k, d=d_model: close(R, rotation(k, d, sign=-1.0), RTOL, ATOL), BACKWARDS),
            (lambda R=R, d=d_model: close(R, rotation(1, d), RTOL, ATOL), WITHOUT_K),
            (lambda R=R, k=k, d=d_model: close(R, rotation(k, d).flip(-1), RTOL, ATOL), COLUMNS_SWAPPED),
        ]
        what = f"R @ PE(pos), R = shift_rotation({k}, {d_model}), for pos {lo} … {hi - 1} (it should be PE(pos + {k}))"
        expect_close(moved, want, what, hints, RTOL, ATOL)


BACKWARDS = (
    "the matrix turns the wrong way: it gives PE(pos − k); from sin(a + b) = sin a·cos b + cos a·sin b, "
    "the first row is [cos b, sin b]"
)
WITHOUT_K = "the angle is ω_i, a shift by one position; a shift by k turns each pair by k·ω_i"
COLUMNS_SWAPPED = "the matrix's columns are swapped: it acts on [sin a, cos a], in that order (the even column first)"


CHECKS = [
    Check("shape", "sinusoidal_table(4, 6) is (max_len, d_model) = (4, 6)", check_shape),
    Check(
        "first row", "position 0 is [0, 1, 0, 1, 0, 1]: sin 0 in the even columns, cos 0 in the odd", check_first_row
    ),
    Check(
        "known value",
        "sinusoidal_table(2, 4) is the docstring's worked example (sin 1, cos 1, sin 0.01, …)",
        check_known_value,
    ),
    Check("values", "sinusoidal_table for (50, 16), (7, 2), (33, 64) is kqv's table", check_values),
    Check(
        "relative position",
        "shift_rotation(k, d) turns every pair of kqv's table from pos to pos + k",
        check_relative_position,
    ),
]
