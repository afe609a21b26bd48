"""What the causal and gradient methods measure: one prediction, as a logit difference.

"Is *it* the pizza?" becomes a number the model computes: at one position (by default the last,
whose logits predict the next token), the logit of a `target` token minus that of an `other`
token. Direct logit attribution splits it into parts, activation patching asks how much of it
one activation restores, gradient attribution spreads it over the input tokens. Without an
`other` the number is the target's logit alone.

    contrast = Contrast(target=tok["tasted"], other=tok["smelled"])
    contrast.of(model(idx).logits)          # (B,): logit[target] − logit[other] at the position
    top_two(logits[0, -1])                  # the model's own two favourites, as a Contrast
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Contrast:
    target: int  # token id
    other: int | None = None  # token id; None: the target's logit alone
    position: int = -1  # the position whose logits are read (-1: the last)

    def direction(self, unembedding: torch.Tensor) -> torch.Tensor:
        """unembedding (V, C) -> (C,): W_U[target] − W_U[other], the residual direction the number reads."""
        d = unembedding[self.target]
        return d - unembedding[self.other] if self.other is not None else d

    def of(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (…, T, V) -> (…,): the logit difference at `position`."""
        row = logits[..., self.position, :]  # (…, V)
        value = row[..., self.target]
        return value - row[..., self.other] if self.other is not None else value


def top_two(logits: torch.Tensor, position: int = -1) -> Contrast:
    """(V,) logits of one position -> the Contrast of its most likely token against the second."""
    first, second = torch.topk(logits.float(), 2).indices.tolist()
    return Contrast(first, second, position)
