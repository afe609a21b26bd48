"""Attention patterns of one input, with the tokens they are about: `AttentionMaps`, one per kind of attention.

The models hand back their patterns when asked (`need_patterns=True` / `need_pattern=True`), which
also forces the written-out attention path. Each family (kqv.families) runs that one forward pass
and keeps, for each kind of attention, every layer's pattern beside the tokens it is about:

    kind       model         queries          keys             mask (what is hidden in a plot)
    "self"     GPT           the text         the text         the model's own (causal by default)
    "encoder"  translation   source + </s>    source + </s>    none
    "decoder"  translation   <s> + target     <s> + target     causal
    "cross"    translation   <s> + target     source + </s>    none

A model to look at comes from a run directory or a preset with random weights:
kqv.families.load_subject.
"""

from dataclasses import dataclass

import numpy as np
import torch

from kqv.errors import UserError
from kqv.inspect.attention import allowed_cells

KINDS = ("self", "encoder", "decoder", "cross")
TRANSLATION_KINDS = ("encoder", "decoder", "cross")


@dataclass
class AttentionMaps:
    """One kind of attention on one input: patterns (L, nh, Tq, Tk) and the tokens on both axes."""

    kind: str
    patterns: np.ndarray  # (L, nh, Tq, Tk) float64; row i of [l, h] is query i's distribution over keys
    query_texts: list[str]  # Tq token texts (kqv.inspect.attention.token_texts)
    key_texts: list[str]  # Tk
    mask: str  # kqv.nn.masks name: which keys each query may see
    default_query: int  # the query shown when none is asked for: the last real token of the query side
    query_side: str  # "text", "source" or "target": where --query-token / --query-index look
    specials: frozenset[str] = frozenset()  # texts of special tokens ("<s>", "</s>"): each a word of its own

    @property
    def self_attention(self) -> bool:
        return self.kind != "cross"

    def allowed(self) -> np.ndarray:
        """(Tq, Tk) bool, True where the mask lets a query see a key."""
        return allowed_cells(self.mask, *self.patterns.shape[-2:])


def stack_patterns(per_layer: list[torch.Tensor]) -> np.ndarray:
    """One input's patterns, a (1, nh, Tq, Tk) tensor per layer -> (L, nh, Tq, Tk) float64."""
    return torch.stack([p[0] for p in per_layer]).double().cpu().numpy()  # L × (nh, Tq, Tk) -> (L, nh, Tq, Tk)


def encode_text(tokenizer, text: str, what: str) -> list[int]:
    """The ids of `text`; an empty text is a UserError naming `what` ("text", "source text")."""
    if not text.strip():
        raise UserError(f'the {what} is empty; give some text to look inside, e.g. "The pizza came out of the oven"')
    return tokenizer.encode(text)
