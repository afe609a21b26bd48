"""What every method of `kqv why` takes: one prompt of token ids, checked, and the model in eval mode.

    idx = prompt_batch(model, ids)               # list, (T,) or (1, T) -> (1, T) on the model's device
    position = check_contrast(model, contrast, T)
    with evaluating(model):                      # eval mode for the block, the model's own mode restored after
        ...

A prompt is token ids, never text: the methods know nothing of tokenizers (kqv.inspect.why does).
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from kqv.errors import UserError
from kqv.inspect.contrast import Contrast

Ids = Sequence[int] | torch.Tensor


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the `with` block, its own mode restored afterwards (also on an error)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def prompt_batch(model, ids: Ids, what: str = "prompt") -> torch.Tensor:
    """Token ids (a list, (T,) or (1, T)) -> a (1, T) LongTensor on the model's device, checked.

    An empty prompt, one longer than the model's block_size, or an id outside its vocabulary is a
    UserError that names `what`."""
    t = torch.as_tensor(ids)
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise UserError(f"the {what} must be one sequence of token ids, got a tensor of shape {tuple(t.shape)}")
    if t.numel() and (t.is_floating_point() or t.is_complex()):
        raise UserError(f"the {what} must be integer token ids, got {t.dtype}")
    c = model.config
    if t.numel() == 0:
        raise UserError(f"the {what} is empty; give it at least one token")
    if t.numel() > c.block_size:
        raise UserError(
            f"the {what} has {t.numel()} tokens; the model reads at most block_size={c.block_size}: crop it"
        )
    low, high = int(t.min()), int(t.max())
    if low < 0 or high >= c.vocab_size:
        bad = low if low < 0 else high
        raise UserError(f"the {what} holds token id {bad}, outside the vocabulary (ids 0 … {c.vocab_size - 1})")
    return t.to(device=model.tok_emb.weight.device, dtype=torch.long)[None]  # (1, T)


def check_position(position: int, T: int, what: str = "position") -> int:
    """A position of T tokens (negative counts from the end) -> 0 … T−1; out of range is a UserError."""
    if not -T <= position < T:
        raise UserError(f"{what} {position} is out of range: the prompt has {T} tokens (0 … {T - 1}, or −1 …)")
    return position % T


def check_contrast(model, contrast: Contrast, T: int) -> int:
    """A contrast's token ids and position checked against the model and a T-token prompt -> the position, 0 … T−1."""
    V = model.config.vocab_size
    for role, token in (("target", contrast.target), ("other", contrast.other)):
        if token is not None and not 0 <= token < V:
            raise UserError(f"the contrast's {role} token id {token} is outside the vocabulary (0 … {V - 1})")
    return check_position(contrast.position, T, "the contrast's position")
