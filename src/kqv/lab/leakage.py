"""The honest loss: how well a model predicts each next token when it cannot see that token.

Teacher-forced loss feeds the whole window and scores every position at once. With a causal mask
that is fair: position t sees tokens 0…t only. A mask that lets position t see t+1 ("none",
"anticausal") can copy the answer, and its teacher-forced loss falls towards 0 while it has learned
nothing it could use to write text.

The honest loss scores position t on a copy of the window in which every token after t is replaced
by a filler token (`filler`, a fixed id: 0 unless the caller picks one). Worked example, T = 4,
window "abcd", filler "_": position 0 reads "a___", position 1 "ab__", position 2 "abc_",
position 3 "abcd", and each is scored on its own next token. The T copies form one (T, T) batch.

For a causal model nothing after t can change position t's logits, so the honest loss equals the
teacher-forced loss (up to float rounding): tests/lab/test_leakage.py checks it.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LeakageResult:
    teacher_forced_loss: float  # nats/token, the ordinary loss on the same windows
    honest_loss: float  # nats/token, each position scored with the future replaced by the filler
    n_tokens: int

    @property
    def gap(self) -> float:
        """honest − teacher-forced: ≈ 0 for a model that cannot see the future."""
        return self.honest_loss - self.teacher_forced_loss


def future_hidden(x: torch.Tensor, filler: int) -> torch.Tensor:
    """(T,) window -> (T, T): row t is x with positions > t replaced by `filler`."""
    T = x.shape[0]
    future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # (T, T), True where column > row
    return x[None, :].expand(T, T).masked_fill(future, filler)  # (T, T)


@torch.no_grad()
def honest_loss(model, x: torch.Tensor, y: torch.Tensor, filler: int = 0) -> LeakageResult:
    """x, y: (B, T) windows and their next tokens -> both losses, each the mean over the B·T targets."""
    model.eval()
    B, T = x.shape
    tf = model(x, y).loss.item()
    total = 0.0
    rows = torch.arange(T, device=x.device)
    for b in range(B):
        logits = model(future_hidden(x[b], filler)).logits  # (T, T, V): batch row t = window with future hidden
        own = logits[rows, rows]  # (T, V): position t of row t
        own = own.to(torch.promote_types(own.dtype, torch.float32))  # bf16 -> float32; float64 stays
        total += F.cross_entropy(own, y[b], reduction="sum").item()
    return LeakageResult(tf, total / (B * T), B * T)
