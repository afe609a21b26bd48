"""Small GPTs for the tests of the why methods: every parameter random, so nothing passes by being 0 or 1."""

import torch

from kqv.config import GPTConfig
from kqv.models.gpt import GPT

POSITIONAL = ["learned", "rope", "alibi", "none", "sinusoidal"]


def widened_gpt(seed: int = 0, std: float = 0.15, vocab_size: int = 50, **kw) -> GPT:
    """A 2-layer, 2-head GPT of width 16 (override any field with kw) whose LayerNorms and biases are random too."""
    torch.manual_seed(seed)
    config = dict(vocab_size=vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16)
    model = GPT(GPTConfig(**{**config, **kw}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model.eval()


def random_prompt(T: int, seed: int = 1, vocab_size: int = 50) -> list[int]:
    return torch.randint(0, vocab_size, (T,), generator=torch.Generator().manual_seed(seed)).tolist()
