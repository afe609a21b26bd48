# kqv exercise: positional-encoding
# expect: first row | the first row is position 1
# mistake: positions 1 … max_len
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
    positions = torch.arange(1, max_len + 1, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model / 2,): 0, 2, 4, …
    angle = positions / 10000 ** (two_i / d_model)  # (max_len, d_model / 2): pos · ω_i
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)  # even columns
    table[:, 1::2] = torch.cos(angle)  # odd columns
    return table.float()


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
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    b = k / 10000 ** (two_i / d_model)  # (d_model / 2,): the angle k · ω_i
    cos, sin = torch.cos(b), torch.sin(b)
    rotation = torch.stack([torch.stack([cos, sin], dim=-1), torch.stack([-sin, cos], dim=-1)], dim=-2)
    return rotation.float()  # (d_model / 2, 2, 2): rows [cos b, sin b] and [−sin b, cos b]
