"""Positional encodings: how a model learns where each token is, by name.

Attention by itself is blind to order. An encoding enters the model at one of three places, so
`PositionalEncoding` has three hooks, each a no-op by default; a model calls all three every time:

    hook                                       kind        names
    add_to_embeddings(x, pos) -> x             "additive"  sinusoidal (Vaswani et al. 2017, §3.5), learned (GPT-2)
    rotate(q, k, q_pos, k_pos) -> (q, k)       "rotary"    rope (Su et al. 2021, RoFormer, §3.2)
    score_bias(q_pos, k_pos) -> (nh, Tq, Tk)   "bias"      alibi (Press et al. 2022, §3)
    (none of them)                             "none"      none

Positions are absolute integer tensors, so a KV cache passes the positions of the new tokens only.
The additive encodings hold a table of block_size rows and refuse positions beyond it; rope and
alibi are functions of position and accept any.

Worked example, `sinusoidal_table(2, 4)`: PE(pos, 2i) = sin(pos/10000^(2i/4)), PE(pos, 2i+1) = cos(…)

    pos 0:  sin 0 = 0        cos 0 = 1        sin 0 = 0           cos 0 = 1
    pos 1:  sin 1 = 0.8415   cos 1 = 0.5403   sin 0.01 = 0.0100   cos 0.01 = 0.99995
"""

import math
from typing import ClassVar

import torch
from torch import nn


def sinusoidal_table(n_positions: int, d_model: int) -> torch.Tensor:
    """(n_positions, d_model) float32 table: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same)."""
    if d_model < 2 or d_model % 2:
        raise ValueError(f"sinusoidal encoding needs an even d_model (sin/cos pairs), got {d_model}")
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (n, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,): 2i
    angle = pos / 10000 ** (two_i / d_model)  # (n, d/2)
    table = torch.empty(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.to(torch.float32)  # computed in float64 so every entry is the correctly rounded float32


def alibi_slopes(n_head: int) -> list[float]:
    """ALiBi head slopes: 2^(−8h/nh) for h = 1..nh when nh is a power of two.

    Otherwise (Press et al. 2022, §3, as in the authors' code): the slopes for the closest lower power
    of two n, then every other slope of the sequence for 2n, until there are nh. nh=6: 1/4, 1/16, 1/64,
    1/256 (n=4), then 1/2, 1/8 (the odd-numbered slopes for 8 heads).
    """

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8 * h / n) for h in range(1, n + 1)]

    closest = 2 ** math.floor(math.log2(n_head))
    if closest == n_head:
        return power_of_two(n_head)
    return power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_head - closest]


class PositionalEncoding(nn.Module):
    """Base class and the "none" encoding: every hook leaves its inputs unchanged."""

    name: ClassVar[str] = "none"
    kind: ClassVar[str] = "none"

    def __init__(self, n_embd: int, n_head: int, block_size: int):
        super().__init__()
        for key, value in (("n_embd", n_embd), ("n_head", n_head), ("block_size", block_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_embd, self.n_head, self.block_size = n_embd, n_head, block_size
        self.head_size = n_embd // n_head

    @property
    def acts_in_attention(self) -> bool:
        """Whether `rotate` or `score_bias` do anything, so attention must build positions for them."""
        return self.kind in ("rotary", "bias")

    def add_to_embeddings(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C), pos: (T,) -> (B, T, C)."""
        return x

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (B, nh, Tq, hs), k: (B, nh, Tk, hs), q_pos: (Tq,), k_pos: (Tk,) -> (q, k), same shapes."""
        return q, k

    def score_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        """-> (nh, Tq, Tk) added to the scores before the mask and softmax, or None."""
        return None

    def extra_repr(self) -> str:
        return f"n_embd={self.n_embd}, n_head={self.n_head}, block_size={self.block_size}"

    def _check_in_table(self, pos: torch.Tensor) -> None:
        # .item() syncs with the device; under torch.compile skip it (the lookup then fails on its own).
        if pos.numel() == 0 or torch.compiler.is_compiling():
            return
        last, first = int(pos.max()), int(pos.min())
        if last >= self.block_size:
            raise ValueError(
                f"sequence of length {last + 1} exceeds block_size {self.block_size} of the {self.name} "
                f"positional encoding; crop the input to its last {self.block_size} tokens"
            )
        if first < 0:
            raise ValueError(f"positions must be ≥ 0, got {first}")


class Sinusoidal(PositionalEncoding):
    """Adds the fixed sinusoidal table (a buffer, not trained, not saved) to the token embeddings."""

    name = "sinusoidal"
    kind = "additive"

    def __init__(self, n_embd: int, n_head: int, block_size: int):
        super().__init__(n_embd, n_head, block_size)
        self.register_buffer("table", sinusoidal_table(block_size, n_embd), persistent=False)  # (block_size, C)

    def add_to_embeddings(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        self._check_in_table(pos)
        return x + self.table[pos].to(x.dtype)  # (B, T, C) + (T, C)


class Learned(PositionalEncoding):
    """Adds a trained embedding of each position (GPT-2's `wpe`), initialised normal(0, 0.02)."""

    name = "learned"
    kind = "additive"

    def __init__(self, n_embd: int, n_head: int, block_size: int):
        super().__init__(n_embd, n_head, block_size)
        self.embedding = nn.Embedding(block_size, n_embd)  # (block_size, C)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=0.02)

    def add_to_embeddings(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        self._check_in_table(pos)
        return x + self.embedding(pos)  # (B, T, C) + (T, C)


class Rotary(PositionalEncoding):
    """RoPE: rotate each consecutive pair (2i, 2i+1) of q and k by the angle pos·θ_i, θ_i = 10000^(−2i/hs).

    Then q_m·k_n depends on m and n only through m − n (a rotation by mθ then by −nθ). The pairs are
    interleaved as in the paper (and GPT-J); GPT-NeoX and Llama pair i with i + hs/2 instead, so their
    weights need a permutation to use this. No table: any position works.
    """

    name = "rope"
    kind = "rotary"
    base = 10000.0

    def __init__(self, n_embd: int, n_head: int, block_size: int):
        super().__init__(n_embd, n_head, block_size)
        if self.head_size % 2:
            raise ValueError(f"rope needs an even head size (rotated in pairs), got n_embd/n_head = {self.head_size}")
        two_i = torch.arange(0, self.head_size, 2, dtype=torch.float64)  # (hs/2,)
        self.register_buffer("inv_freq", (self.base ** (-two_i / self.head_size)).float(), persistent=False)

    def _rotate(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        angle = pos.to(self.inv_freq.dtype)[:, None] * self.inv_freq  # (T, hs/2)
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)  # (T, hs/2)
        x0, x1 = x[..., 0::2], x[..., 1::2]  # (B, nh, T, hs/2) each
        out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)  # (B, nh, T, hs/2, 2)
        return out.flatten(-2)  # (B, nh, T, hs), pairs back in place

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rotate(q, q_pos), self._rotate(k, k_pos)


class ALiBi(PositionalEncoding):
    """ALiBi: add −m_h·|q_pos − k_pos| to head h's scores; no position embedding at all.

    With a causal mask only k ≤ q is seen and this is the paper's −m_h·(q − k); the absolute value
    keeps the penalty symmetric for masks that see the future. Slopes: see `alibi_slopes`.
    """

    name = "alibi"
    kind = "bias"

    def __init__(self, n_embd: int, n_head: int, block_size: int):
        super().__init__(n_embd, n_head, block_size)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(n_head)), persistent=False)  # (nh,)

    def score_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        distance = (q_pos[:, None] - k_pos[None, :]).abs().to(self.slopes.dtype)  # (Tq, Tk)
        return -self.slopes[:, None, None] * distance  # (nh, 1, 1) * (Tq, Tk) -> (nh, Tq, Tk)


POSITIONAL: dict[str, type[PositionalEncoding]] = {
    cls.name: cls for cls in (Sinusoidal, Learned, Rotary, ALiBi, PositionalEncoding)
}


def make_positional(name: str, n_embd: int, n_head: int, block_size: int) -> PositionalEncoding:
    """Build the positional encoding called `name` for a model of width n_embd with n_head heads."""
    if name not in POSITIONAL:
        raise ValueError(f"unknown positional encoding {name!r}; valid encodings: {', '.join(POSITIONAL)}")
    return POSITIONAL[name](n_embd, n_head, block_size)
