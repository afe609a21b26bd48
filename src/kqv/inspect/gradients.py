"""Gradient attribution: how much each input token moves one prediction, from gradients on its embedding.

The number explained is a Contrast f (kqv.inspect.contrast): a logit difference at one position, e.g.
"tasted" against "smelled" after "…and it". The gradients are taken on the token embeddings e (T, C),
the `embed` hook point, before positions are added, so a token's score is about the token, not where
it stands.

Gradient × input (Shrikumar et al. 2016; Simonyan et al. 2014 for the plain gradient): the first-order
Taylor share of each token,

    score_t = Σ_c ∂f/∂e[t, c] · e[t, c]

Integrated gradients (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks"): the
gradient averaged along the straight path from a baseline e₀ to e, times the distance travelled,

    score_t = Σ_c (e − e₀)[t, c] · ∫₀¹ ∂f/∂e[t, c] (e₀ + α·(e − e₀)) dα

approximated here with the midpoint rule, α_s = (s + ½)/S for s = 0 … S−1 (error O(1/S²)). The scores
add up to f(e) − f(e₀) (completeness), up to that error: `completeness_gap` reports how far off they
are. Every step of the path is one sequence of one batch, so the whole integral is a single forward
and backward pass (split into chunks only when the batch would not fit in memory).

Baselines: "zero" (zero token embeddings; the positions stay), "mean" (every token replaced by the
mean embedding row, a token "on average") or a token id (every token replaced by that token, e.g. a
space). The gradients are taken on the embeddings alone: the model's parameters get no .grad.
"""

from dataclasses import dataclass

import torch

from kqv.errors import UserError
from kqv.inspect.cache import hooks
from kqv.inspect.contrast import Contrast
from kqv.inspect.prompt import evaluating, prompt_batch

BASELINES = ("zero", "mean")  # or a token id
ACTIVATION_BUDGET = 2**27  # numbers kept for the backward pass of one chunk of the path (512 MiB in float32)


@dataclass
class Attribution:
    method: str  # "gradient_x_input" or "integrated_gradients"
    scores: torch.Tensor  # (T,): one number per input token, in the units of the contrast (logits)
    value: float  # f(input): the contrast on the real input
    baseline_value: float | None = None  # f(baseline); integrated gradients only
    completeness_gap: float | None = None  # |Σ scores − (value − baseline_value)| / |value − baseline_value|; IG only
    steps: int | None = None  # points on the path (midpoint rule); IG only
    baseline: str | int | None = None  # "zero", "mean" or a token id; IG only


def _check_contrast(model, contrast: Contrast, T: int) -> None:
    V = model.config.vocab_size
    for name, token in (("target", contrast.target), ("other", contrast.other)):
        if token is not None and not 0 <= token < V:
            raise UserError(f"the contrast's {name} token {token} is not in the vocabulary (0 … {V - 1})")
    if not -T <= contrast.position < T:
        raise UserError(f"the contrast reads position {contrast.position}, but the input has {T} tokens")


def _contrast_with_embeddings(model, idx: torch.Tensor, embeddings: torch.Tensor, contrast: Contrast) -> torch.Tensor:
    """f for each row of `embeddings` (B, T, C) standing in for the token embeddings of idx (1, T) -> (B,)."""
    batch = idx.expand(embeddings.shape[0], -1)  # (B, T): the ids still decide nothing else, but shape the pass
    with hooks(model, {"embed": lambda x, name: embeddings}):
        logits = model(batch).logits  # (B, T, V)
    return contrast.of(logits)  # (B,)


def _baseline_embeddings(model, e: torch.Tensor, baseline: str | int) -> torch.Tensor:
    """e (T, C) -> e₀ (T, C) for a baseline name or token id."""
    weight = model.tok_emb.weight.detach()  # (V, C)
    if isinstance(baseline, bool) or not isinstance(baseline, (str, int)):
        raise UserError(f"baseline must be 'zero', 'mean' or a token id, got {baseline!r}")
    if baseline == "zero":
        return torch.zeros_like(e)  # (T, C)
    if baseline == "mean":
        return weight.mean(dim=0).expand_as(e)  # (C,) -> (T, C)
    if isinstance(baseline, str):
        raise UserError(f"unknown baseline {baseline!r}; choose 'zero', 'mean' or a token id")
    if not 0 <= baseline < weight.shape[0]:
        raise UserError(f"baseline token {baseline} is not in the vocabulary (0 … {weight.shape[0] - 1})")
    return weight[baseline].expand_as(e)  # (C,) -> (T, C)


def _steps_per_pass(model, T: int) -> int:
    """How many path points one forward+backward pass takes: a rough count of the activations kept per sequence."""
    c = model.config
    per_token = c.n_layer * (24 * c.n_embd + 2 * c.n_head * T) + c.vocab_size  # blocks (+ patterns), logits
    return max(1, ACTIVATION_BUDGET // (T * per_token))


def gradient_x_input(model, ids, contrast: Contrast) -> Attribution:
    """score_t = Σ_c ∂f/∂e[t, c] · e[t, c] on the token embeddings e of `ids` (a list or LongTensor)."""
    idx = prompt_batch(model, ids)  # (1, T)
    _check_contrast(model, contrast, idx.shape[1])
    with evaluating(model), torch.enable_grad():
        e = model.tok_emb.weight.detach()[idx].clone().requires_grad_(True)  # (1, T, C), a leaf
        f = _contrast_with_embeddings(model, idx, e, contrast)[0]  # ()
        (grad,) = torch.autograd.grad(f, e)  # (1, T, C); on e only: the parameters get no .grad
    scores = (grad * e.detach()).sum(dim=-1)[0]  # (1, T, C) -> (T,)
    return Attribution("gradient_x_input", scores, float(f.detach()))


def integrated_gradients(model, ids, contrast: Contrast, steps: int = 32, baseline: str | int = "zero") -> Attribution:
    """Integrated gradients of `contrast` on the token embeddings of `ids`, from `baseline`, midpoint rule."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be a whole number ≥ 1, got {steps!r}")
    idx = prompt_batch(model, ids)  # (1, T)
    T = idx.shape[1]
    _check_contrast(model, contrast, T)
    e = model.tok_emb.weight.detach()[idx[0]]  # (T, C)
    e0 = _baseline_embeddings(model, e, baseline)  # (T, C)
    alphas = (torch.arange(steps, dtype=e.dtype, device=e.device) + 0.5) / steps  # (S,): midpoints of S equal parts
    path = e0 + alphas[:, None, None] * (e - e0)  # (S, T, C)
    endpoints = torch.stack([e, e0])  # (2, T, C): f(x) and f(x₀) ride along in the first chunk
    grad_sum = torch.zeros_like(e)  # (T, C)
    per_pass = _steps_per_pass(model, T)
    with evaluating(model), torch.enable_grad():
        for start in range(0, steps, per_pass):
            chunk = path[start : start + per_pass].clone().requires_grad_(True)  # (s, T, C), a leaf
            batch = torch.cat([endpoints, chunk]) if start == 0 else chunk  # (2 + s, T, C) | (s, T, C)
            f = _contrast_with_embeddings(model, idx, batch, contrast)  # (2 + s,) | (s,)
            if start == 0:
                value, baseline_value = f[:2].detach().tolist()
                f = f[2:]  # (s,)
            (grad,) = torch.autograd.grad(f.sum(), chunk)  # (s, T, C): each row's f depends on its own row only
            grad_sum += grad.sum(dim=0)  # (T, C)
    scores = ((e - e0) * grad_sum / steps).sum(dim=-1)  # (T, C) -> (T,)
    change = value - baseline_value
    tiny = torch.finfo(e.dtype).tiny
    gap = abs(float(scores.sum()) - change) / max(abs(change), tiny)
    return Attribution("integrated_gradients", scores, value, baseline_value, gap, steps, baseline)
