"""A random GPT whose attention is sharp: the tests that a wrong window or a stale cached key shows."""

import torch

from kqv.config import GPTConfig
from kqv.models.gpt import GPT


def sharp_gpt(config: GPTConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> GPT:
    """Every matrix drawn from N(0, 0.3²), far from GPT-2's small init, so a head puts its weight on few keys
    and a key that should not be there (or is missing) moves the logits well beyond rounding."""
    torch.manual_seed(seed)
    model = GPT(config).eval().to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model
