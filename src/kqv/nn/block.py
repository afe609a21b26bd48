"""A pre-LayerNorm transformer block (GPT-2, Radford et al. 2019, §2.3) and its MLP.

    x = x + Attention(LayerNorm(x))     # tokens exchange information
    x = x + MLP(LayerNorm(x))           # each token thinks on its own

The residual stream x keeps its shape (B, T, C) throughout; every sublayer reads
a normalised copy and adds its result back. Hook points (kqv.nn.hooks) name the
stream before, between and after the sublayers: resid_pre, resid_mid, resid_post.
"""

import torch
from torch import nn

from kqv.nn.attention import AttentionOutput, MultiHeadAttention
from kqv.nn.hooks import HookPoint
from kqv.nn.kv_cache import LayerCache
from kqv.nn.positional import PositionalEncoding


class FeedForward(nn.Module):
    """Linear C -> H, activation, Linear H -> C, dropout. H = 4C and GELU for GPT (GPT-2: GELU's tanh
    approximation, "gelu_tanh"); the 2017 Transformer uses ReLU."""

    ACTIVATIONS = {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU}

    def __init__(
        self, n_embd: int, bias: bool = False, dropout: float = 0.0, hidden: int | None = None, activation: str = "gelu"
    ) -> None:
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(self.ACTIVATIONS)}")
        hidden = hidden or 4 * n_embd
        self.fc = nn.Linear(n_embd, hidden, bias=bias)
        self.act = self.ACTIVATIONS[activation]()
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.hidden, self.out = HookPoint(), HookPoint()  # hook points: activation (B, T, H), output (B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.hidden(self.act(self.fc(x))))  # (B, T, C) -> (B, T, H) -> (B, T, C)
        return self.out(self.dropout(x) if self.training else x)


class Block(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        c = config
        self.ln_1 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = MultiHeadAttention(c.n_embd, c.n_head, c.bias, c.dropout, c.score, c.mask)
        self.ln_2 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.mlp = FeedForward(c.n_embd, c.bias, c.dropout, activation=c.activation)
        self.resid_pre, self.resid_mid, self.resid_post = HookPoint(), HookPoint(), HookPoint()  # (B, T, C) each

    def forward(
        self,
        x: torch.Tensor,
        cache: LayerCache | None = None,
        start: int = 0,
        need_pattern: bool = False,
        positional: PositionalEncoding | None = None,
    ) -> tuple[torch.Tensor, AttentionOutput]:
        x = self.resid_pre(x)  # (B, T, C)
        attn = self.attn(self.ln_1(x), cache=cache, start=start, need_pattern=need_pattern, positional=positional)
        x = self.resid_mid(x + attn.out)  # (B, T, C)
        x = self.resid_post(x + self.mlp(self.ln_2(x)))  # (B, T, C)
        return x, attn
