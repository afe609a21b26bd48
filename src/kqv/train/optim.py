"""AdamW with weight decay on weight matrices only, and the warm-up + cosine schedule.

Decay pulls weights towards 0; it suits matrices that mix features, not biases,
LayerNorm gains or embedding tables (a rarely seen token's row would just shrink).
"""

import math

import torch
from torch import nn


def decay_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool = False) -> list[dict]:
    """Two parameter groups: Linear weight matrices (decayed) and everything else (not).

    With `decay_embeddings` the embedding tables (the tied LM head among them) are decayed
    too, as nanoGPT does: it decays every parameter with two or more dimensions.
    """
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if decay_embeddings:
        decayed, embeddings = decayed | embeddings, set()
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():  # a tied parameter appears once
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if id(p) in decayed and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: str,
    decay_embeddings: bool = False,
    eps: float = 1e-8,
):
    """AdamW over `decay_groups`, fused: one kernel updates every parameter of a group.

    torch has the fused kernel for CUDA parameters and, in recent versions, CPU ones; where a
    build lacks it, AdamW falls back to torch's default (the foreach kernels). The parameters
    must already be on their device (`device`, kept for callers; the kernel follows the parameters).
    """
    groups = decay_groups(model, weight_decay, decay_embeddings)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def learning_rate(step: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine from lr to min_lr at `decay_iters`, then min_lr.

    `step` counts from 0; step 0 already gets lr/warmup (never a zero step).
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup) / max(1, decay_iters - warmup)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def inverse_sqrt_lr(step: int, lr: float, warmup: int) -> float:
    """The Transformer paper's schedule (Vaswani et al. 2017, eq. 3), with its peak named.

    Paper: rate = d_model^−0.5 · min(s^−0.5, s · warmup^−1.5), s = step + 1: linear up to
    s = warmup, then ∝ 1/√s. That is lr · min(s / warmup, √(warmup / s)) with the peak
    lr = (d_model · warmup)^−0.5 — 7.0e-4 for d_model 512 and 4,000 warm-up steps.
    """
    s = step + 1
    if warmup <= 0:
        return lr / math.sqrt(s)
    return lr * min(s / warmup, math.sqrt(warmup / s))


def scheduled_lr(step: int, cfg) -> float:
    """The learning rate of optimiser step `step` (from 0) under a TrainConfig's schedule."""
    if cfg.schedule == "inverse_sqrt":
        return inverse_sqrt_lr(step, cfg.lr, cfg.warmup_iters)
    return learning_rate(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters or cfg.max_iters)
