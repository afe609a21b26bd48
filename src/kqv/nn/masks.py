"""Attention masks: which keys each query may see, by name.

A mask is a boolean matrix `allowed` (Tq, Tk), True where query i may attend to key j
(Vaswani et al. 2017, §3.2.3: "masking out (setting to −∞) all values in the input of
the softmax which correspond to illegal connections"). It is computed from absolute
integer positions, so the same code serves a full sequence (q_pos = k_pos = 0..T-1)
and a KV cache (q_pos = the last few positions of a longer k_pos).

    name          query at position p sees keys at positions k with     sees the future  KV cache exact
    "causal"      k ≤ p          (upper-right triangle masked)            no               yes
    "none"        every k        (nothing masked: `allowed` is None)       yes              no
    "anticausal"  k ≥ p          (lower-left triangle masked)             yes              yes
    "window:N"    p − N < k ≤ p  (the last N positions, itself included)  no               yes

KV cache exact. A cache (kqv.nn.kv_cache) keeps each position's keys and values from the
step it was the newest. That is exact when no new query ever reads a key that later tokens
would have changed: under "causal" and "window:N" no position sees a later one, so its keys
never change; under "anticausal" the newest query sees only itself, so it reads no cached
key at all. Under "none" the newest query reads every earlier key, and from the second layer
on those depend on the tokens after them, which did not exist when they were cached: a cache
would give different logits, so decoding recomputes instead (`MaskSpec.cache_exact`).

Worked example, "window:2" at T = 4 (rows are queries, columns keys):

    1 0 0 0
    1 1 0 0
    0 1 1 0
    0 0 1 1

Fully masked rows. A row with no allowed key (a padding query whose keys are all padding,
or an anticausal query past every cached key) becomes a row of −inf in `additive_mask`,
and softmax of it is NaN. This module leaves it so; the attention code zeroes such rows.
"""

import re
from dataclasses import dataclass

import torch

MASK_FORMS = ("causal", "none", "anticausal", "window:N")
_WINDOW = re.compile(r"window:(\d+)")


@dataclass(frozen=True)
class MaskSpec:
    """A parsed mask name: kind is "causal", "none", "anticausal" or "window"; window is N for "window:N"."""

    kind: str
    window: int | None = None

    @property
    def name(self) -> str:
        return f"window:{self.window}" if self.kind == "window" else self.kind

    @property
    def cache_exact(self) -> bool:
        """Whether decoding with a KV cache gives the logits of a full recomputation (the table above)."""
        return self.kind != "none"


def _invalid(name: object) -> ValueError:
    return ValueError(f"unknown mask {name!r}; valid masks: {', '.join(MASK_FORMS)} (N an integer ≥ 1)")


def parse_mask(name: str) -> MaskSpec:
    """Parse a mask name: `"causal"` -> MaskSpec("causal"), `"window:3"` -> MaskSpec("window", 3); else ValueError."""
    if name in ("causal", "none", "anticausal"):
        return MaskSpec(name)
    match = _WINDOW.fullmatch(name) if isinstance(name, str) else None
    if match is None or int(match.group(1)) < 1:
        raise _invalid(name)
    return MaskSpec("window", int(match.group(1)))


def _spec(name_or_spec: str | MaskSpec) -> MaskSpec:
    return name_or_spec if isinstance(name_or_spec, MaskSpec) else parse_mask(name_or_spec)


def sees_future(name_or_spec: str | MaskSpec) -> bool:
    """True when a position may attend to later positions ("none", "anticausal"): such a language model leaks."""
    return _spec(name_or_spec).kind in ("none", "anticausal")


def allowed_positions(name_or_spec: str | MaskSpec, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
    """(Tq,) and (Tk,) integer positions -> (Tq, Tk) bool, True where the query may see the key; None for "none"."""
    spec = _spec(name_or_spec)
    if spec.kind == "none":
        return None
    q = q_pos[:, None]  # (Tq, 1)
    k = k_pos[None, :]  # (1, Tk)
    if spec.kind == "causal":
        return k <= q  # (Tq, Tk)
    if spec.kind == "anticausal":
        return k >= q  # (Tq, Tk)
    return (k <= q) & (k > q - spec.window)  # (Tq, Tk)


def with_key_padding(allowed: torch.Tensor | None, key_padding: torch.Tensor | None) -> torch.Tensor | None:
    """Combine a (Tq, Tk) mask with a (B, Tk) padding mask (True = padding token) into one (B, 1, Tq, Tk) mask.

    The result broadcasts against attention maps (B, nh, Tq, Tk). Where one input is missing its axes have
    size 1: padding only gives (B, 1, 1, Tk), a mask only gives (1, 1, Tq, Tk); neither gives None.
    """
    if key_padding is None:
        return None if allowed is None else allowed[None, None]  # (1, 1, Tq, Tk)
    if key_padding.dim() != 2:
        raise ValueError(f"key_padding must be (B, Tk), got shape {tuple(key_padding.shape)}")
    keep = ~key_padding.bool()[:, None, None, :]  # (B, 1, 1, Tk)
    if allowed is None:
        return keep
    if allowed.shape[-1] != key_padding.shape[-1]:
        raise ValueError(f"mask has Tk={allowed.shape[-1]} keys but key_padding has Tk={key_padding.shape[-1]}")
    return allowed[None, None] & keep  # (1, 1, Tq, Tk) & (B, 1, 1, Tk) -> (B, 1, Tq, Tk)


def additive_mask(allowed: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """Boolean mask -> float mask of the same shape: 0 where allowed, −inf where not (added to scores before softmax).

    −inf, never a finite −1e4: a model can learn scores large enough to see past a finite mask.
    """
    if allowed is None:
        return None
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return zeros.masked_fill(~allowed, float("-inf"))
