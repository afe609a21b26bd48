"""Attention score functions: how much query i attends to key j, before the mask and the softmax.

Every score is a module with one signature,

    forward(q: (B, nh, Tq, hs), k: (B, nh, Tk, hs)) -> scores: (B, nh, Tq, Tk)

built by `make_score(name, n_head, head_size)` from the registry `SCORES`:

    scaled_dot   q·kᵀ / √hs                       Vaswani et al. 2017, eq. 1
    dot          q·kᵀ                             Luong et al. 2015, "dot"
    squared_dot  (q⊙q)·(k⊙k)ᵀ / √hs               an ablation: square each component, then dot
    dot_squared  (q·kᵀ / √hs)² = (q·kᵀ)² / hs      an ablation: dot, then square the score
    cosine       τ_h · cos(q, k), learned τ_h     Liu et al. 2022 (Swin v2), §3.2
    additive     vₕᵀ tanh(Wₕ q + Uₕ k)             Bahdanau et al. 2015, eq. 6 / App. A.1.2
    negated_dot  −q·kᵀ / √hs                      an ablation: the literal inverse of scaled_dot
    neg_distance −‖q − k‖² / √hs                  an ablation: attend to the nearest key

`fast_path_ok` is True only for scaled_dot: exactly what `F.scaled_dot_product_attention` computes,
so the model may call it instead (when no attention pattern is requested).
"""

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn


class Score(nn.Module):
    """Base class: holds n_head and head_size; subclasses implement forward(q, k)."""

    name: ClassVar[str]
    fast_path_ok: ClassVar[bool] = False

    def __init__(self, n_head: int, head_size: int):
        super().__init__()
        self.n_head = n_head
        self.head_size = head_size

    def extra_repr(self) -> str:
        return f"n_head={self.n_head}, head_size={self.head_size}"


class ScaledDot(Score):
    """q·kᵀ/√hs. The scale is √(head size), not √(model width): it keeps the scores' variance near 1
    when q and k have unit-variance components, so the softmax does not saturate."""

    name = "scaled_dot"
    fast_path_ok = True

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # (B, nh, Tq, hs) @ (B, nh, hs, Tk) -> (B, nh, Tq, Tk)
        return q @ k.transpose(-2, -1) / math.sqrt(self.head_size)


class Dot(Score):
    """q·kᵀ unscaled: the scores' variance grows with hs and the softmax tends to one-hot."""

    name = "dot"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q @ k.transpose(-2, -1)  # (B, nh, Tq, Tk)


class SquaredDot(Score):
    """(q⊙q)·(k⊙k)ᵀ/√hs: scaled_dot on the squared components (square first, then the dot product).

    The literal reading of "square the numbers first"; for the square of the dot product itself,
    (q·kᵀ)², see DotSquared ("dot_squared").

    Every score is ≥ 0 and the sign of each component is lost, so q and −q score every key alike
    and a query cannot score one key below another by disagreeing with it. A deliberate ablation.
    """

    name = "squared_dot"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q * q) @ (k * k).transpose(-2, -1) / math.sqrt(self.head_size)  # (B, nh, Tq, Tk)


class DotSquared(Score):
    """(q·kᵀ/√hs)² = (q·kᵀ)²/hs: the square of scaled_dot (the dot product first, then square it).

    Not squared_dot, which squares each component before the dot product: here the products qᵢkᵢ are
    summed with their signs, so q and k must agree or disagree as whole vectors. Every score is ≥ 0
    and q·k = −c scores like +c, so a key pointing away from the query is attended as much as one
    pointing towards it.

    Scale: the square of scaled_dot, i.e. divided by hs, not by √hs. With unit-variance components
    q·k/√hs has mean 0 and variance 1, so its square has mean 1 and variance 2 whatever the head
    size; (q·k)²/√hs would have mean √hs and grow with the head, saturating the softmax as `dot` does.
    """

    name = "dot_squared"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q @ k.transpose(-2, -1) / math.sqrt(self.head_size)).square()  # (B, nh, Tq, Tk)


class Cosine(Score):
    """τ_h · cos(q, k) with a learned temperature per head, stored as log τ.

    Cosine similarity is bounded in [−1, 1], so without τ the softmax could never be sharp. τ starts
    at 10 and is capped at 100, as in Swin v2's scaled cosine attention (its `logit_scale`); √hs would
    start too flat for small heads (√8 ≈ 2.8 gives at most a 300:1 ratio between two keys' weights).
    Norms are clamped below by eps, so a zero q or k scores 0 instead of NaN.
    """

    name = "cosine"
    init_temperature = 10.0
    max_temperature = 100.0
    eps = 1e-6

    def __init__(self, n_head: int, head_size: int):
        super().__init__(n_head, head_size)
        self.log_temperature = nn.Parameter(torch.full((n_head,), math.log(self.init_temperature)))  # (nh,)

    def temperature(self) -> torch.Tensor:
        """(nh,) τ_h = exp(min(log τ_h, log 100))."""
        return self.log_temperature.clamp(max=math.log(self.max_temperature)).exp()

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q = F.normalize(q, dim=-1, eps=self.eps)  # (B, nh, Tq, hs), unit rows
        k = F.normalize(k, dim=-1, eps=self.eps)  # (B, nh, Tk, hs)
        tau = self.temperature().view(1, -1, 1, 1)  # (1, nh, 1, 1)
        return tau * (q @ k.transpose(-2, -1))  # (B, nh, Tq, Tk)


class Additive(Score):
    """Bahdanau et al. 2015: score(q, k) = vₕᵀ tanh(Wₕ q + Uₕ k) for each head h.

    Parameters W, U: (nh, hs, hs) and v: (nh, hs), no bias (as in the paper), initialised
    uniform(±1/√hs) like `nn.Linear`. Wq and Uk are computed once per query and per key, but the
    tanh needs every pair: an intermediate of B·nh·Tq·Tk·hs elements, hs times the attention map,
    kept for the backward pass. At B=8, nh=6, T=256, hs=64 that is 201M floats, 805 MB in float32.
    """

    name = "additive"

    def __init__(self, n_head: int, head_size: int):
        super().__init__(n_head, head_size)
        bound = 1 / math.sqrt(head_size)
        self.W = nn.Parameter(torch.empty(n_head, head_size, head_size).uniform_(-bound, bound))  # (nh, hs, hs)
        self.U = nn.Parameter(torch.empty(n_head, head_size, head_size).uniform_(-bound, bound))  # (nh, hs, hs)
        self.v = nn.Parameter(torch.empty(n_head, head_size).uniform_(-bound, bound))  # (nh, hs)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        wq = torch.einsum("hed,bhqd->bhqe", self.W, q)  # (B, nh, Tq, hs): Wₕ q
        uk = torch.einsum("hed,bhkd->bhke", self.U, k)  # (B, nh, Tk, hs): Uₕ k
        hidden = torch.tanh(wq[:, :, :, None, :] + uk[:, :, None, :, :])  # (B, nh, Tq, Tk, hs)
        return torch.einsum("bhqke,he->bhqk", hidden, self.v)  # (B, nh, Tq, Tk)


class NegatedDot(Score):
    """−q·kᵀ/√hs: the key most like the query gets the least weight.

    The learner's "what if we use the inverse?". Inside a model it changes nothing that matters: q = x·W_Q
    with W_Q learned, and −q·k = (x·(−W_Q))·k, so the model can learn −W_Q and recover scaled_dot exactly;
    W_Q's initialisation is symmetric about 0, so even the starting distribution is the same. Expect the
    same loss as scaled_dot within seed noise: the sign of a learned score is a convention, not a choice.
    """

    name = "negated_dot"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return -(q @ k.transpose(-2, -1)) / math.sqrt(self.head_size)  # (B, nh, Tq, Tk)


class NegDistance(Score):
    """−‖q − k‖²/√hs: attend to the nearest key, as an RBF kernel would.

    The other "inverse": a large distance means a small score. Expanding, −‖q−k‖² = 2q·k − ‖q‖² − ‖k‖².
    The −‖q‖² term is the same for every key in a row and the softmax ignores it (shift-invariance), so
    this is scaled_dot at twice the scale minus a penalty on long keys: a key can no longer win by being
    long, only by being close. Kim et al. 2021 ("The Lipschitz constant of self-attention") use this
    L2 form to make attention Lipschitz.
    """

    name = "neg_distance"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        qk = q @ k.transpose(-2, -1)  # (B, nh, Tq, Tk)
        qq = (q * q).sum(-1, keepdim=True)  # (B, nh, Tq, 1)
        kk = (k * k).sum(-1)[:, :, None, :]  # (B, nh, 1, Tk)
        return -(qq - 2 * qk + kk) / math.sqrt(self.head_size)  # (B, nh, Tq, Tk)


SCORES: dict[str, type[Score]] = {
    cls.name: cls for cls in (ScaledDot, Dot, SquaredDot, DotSquared, Cosine, Additive, NegatedDot, NegDistance)
}


def make_score(name: str, n_head: int, head_size: int) -> Score:
    """Build the score called `name` for n_head heads of head_size each."""
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; valid scores: {', '.join(SCORES)}")
    if n_head < 1 or head_size < 1:
        raise ValueError(f"n_head and head_size must be ≥ 1, got n_head={n_head}, head_size={head_size}")
    return SCORES[name](n_head, head_size)
