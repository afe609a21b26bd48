"""A decoder-only transformer language model (GPT-2 layout).

    tokens (B, T) -> token embedding (B, T, C) [+ positions] -> dropout
      -> n_layer × Block (pre-LN masked multi-head self-attention, MLP, residuals)
      -> final LayerNorm -> LM head tied to the token embedding -> logits (B, T, V)

Hook points (kqv.nn.hooks) name every activation by module path: `embed`,
`pos_embed`, `blocks.{i}.…` (see kqv/nn/block.py and attention.py), `ln_final`,
`logits`; docs/activations.md lists them with their shapes.

The model knows nothing of training: `forward(idx, targets)` returns a small
named result with the logits and, when targets are given, the mean cross-entropy
(nats per token).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kqv.config import GPTConfig
from kqv.nn.block import Block
from kqv.nn.hooks import HookPoint
from kqv.nn.kv_cache import KVCache
from kqv.nn.masks import parse_mask
from kqv.nn.positional import make_positional


@dataclass
class GPTOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # scalar, nats per token
    patterns: list[torch.Tensor] | None = None  # per layer (B, nh, T, Tk), when asked for


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd)
        self.positional = make_positional(c.pos_encoding, c.n_embd, c.n_head, c.block_size)
        self.cache_exact = parse_mask(c.mask).cache_exact  # may a KV cache stand in for recomputation
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one (V, C) matrix reads and writes tokens
        # hook points: token embeddings, + positions (B, T, C); after ln_f (B, T, C); logits (B, T, V)
        self.embed, self.pos_embed, self.ln_final, self.logits = HookPoint(), HookPoint(), HookPoint(), HookPoint()
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(".proj.weight"):  # the residual projections (attn.proj, mlp.proj), scaled as in GPT-2
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix counts once

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        c = self.config
        weight = self.tok_emb.weight  # the cache holds k and v in the model's own dtype and device by default
        return KVCache(
            c.n_layer,
            batch,
            c.n_head,
            max_len or c.block_size,
            c.head_size,
            device or weight.device,
            dtype or weight.dtype,
        )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        need_patterns: bool = False,
    ) -> GPTOutput:
        """idx: (B, T) token ids; with a cache they continue the cached positions.

        A cache is refused (ValueError) for a mask under which it would not be exact (mask "none",
        see kqv.nn.masks): there the text must be fed whole each step.
        """
        B, T = idx.shape
        if cache is not None and not self.cache_exact:
            raise ValueError(
                f"a KV cache is not exact for mask {self.config.mask!r} (earlier keys change as the text grows); "
                "feed the whole window without a cache"
            )
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of length {start + T} exceeds block_size {self.config.block_size}; crop the context"
            )
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.embed(self.tok_emb(idx))  # (B, T) -> (B, T, C)
        x = self.pos_embed(self.positional.add_to_embeddings(x, pos))  # learned / sinusoidal; x for rope, alibi, none
        if self.training:
            x = self.drop(x)
        patterns = []
        for i, block in enumerate(self.blocks):
            x, attn = block(x, cache.layers[i] if cache is not None else None, start, need_patterns, self.positional)
            if need_patterns:
                patterns.append(attn.pattern)
        x = self.ln_final(self.ln_f(x))  # (B, T, C)
        logits = self.logits(self.lm_head(x))  # (B, T, C) @ (C, V) -> (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))  # mean over B·T tokens
        return GPTOutput(logits, loss, patterns if need_patterns else None)
