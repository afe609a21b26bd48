"""The logit lens: read the residual stream as if the model stopped early (nostalgebraist 2020).

After the embedding and after every block, the stream x (T, C) is sent through the model's own
end, the final LayerNorm and the tied unembedding:

    lens(x) = softmax(LayerNorm_f(x) · W_Uᵀ)        (T, C) -> (T, V)

so row "block i" says what the model would predict if blocks i+1 … L−1 were skipped, and the last
row is the model's own output. Where the answer appears, and from which row on it stays the top
token, hints at which blocks make the prediction; the lens reads only, it explains nothing causally
(patching does, kqv.inspect.patching). Reference: nostalgebraist, "interpreting GPT: the logit
lens", LessWrong 2020.

    lens = logit_lens(gpt, ids, target=tok["pizza"])
    lens.rows                    # ["embed", "block 0", …, "block L−1"]
    lens.target_rank[:, -1]      # (L+1,): the target's rank at the last position, row by row
    lens.first_row()             # the row from which the target is top-1 at the last position, or None

This module also holds the input checks that the other causal methods share (`prompt_batch`,
`check_contrast`, `evaluating`): a prompt is a list of token ids (or a LongTensor), never text.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from kqv.errors import UserError
from kqv.inspect.cache import run_with_cache
from kqv.inspect.contrast import Contrast
from kqv.models.gpt import GPT

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


def prompt_batch(model: GPT, ids: Ids, what: str = "prompt") -> torch.Tensor:
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
        raise UserError(f"the {what} holds token id {bad}; the model's ids are 0 … {c.vocab_size - 1}")
    return t.to(device=model.tok_emb.weight.device, dtype=torch.long)[None]  # (1, T)


def check_position(position: int, T: int, what: str = "position") -> int:
    """A position of T tokens (negative counts from the end) -> 0 … T−1; out of range is a UserError."""
    if not -T <= position < T:
        raise UserError(f"{what} {position} is out of range: the prompt has {T} tokens (0 … {T - 1}, or −1 …)")
    return position % T


def check_contrast(model: GPT, contrast: Contrast, T: int) -> int:
    """A contrast's token ids and position checked against the model and a T-token prompt -> the position, 0 … T−1."""
    V = model.config.vocab_size
    for role, token in (("target", contrast.target), ("other", contrast.other)):
        if token is not None and not 0 <= token < V:
            raise UserError(f"the contrast's {role} token id {token} is outside the vocabulary (0 … {V - 1})")
    return check_position(contrast.position, T, "the contrast's position")


@dataclass
class Lens:
    rows: list[str]  # L+1 labels: "embed", "block 0", …, "block L−1"
    top_ids: torch.Tensor  # (L+1, T, k) long: the k most likely next tokens, row by row, position by position
    top_probs: torch.Tensor  # (L+1, T, k): their softmax probabilities
    target: int | None = None  # token id
    target_prob: torch.Tensor | None = None  # (L+1, T): the target's probability
    target_rank: torch.Tensor | None = None  # (L+1, T) long: tokens more likely than the target (0 = top-1)

    def first_row(self, position: int = -1) -> int | None:
        """The first row r such that the target is top-1 at `position` in row r and in every row after it.

        Without a target: the model's own top-1 token there (the last row's), i.e. from which row on
        the model "already knows" its answer. None when the last row's top-1 is not the target."""
        position = check_position(position, self.top_ids.shape[1])
        top1 = self.top_ids[:, position, 0]  # (L+1,)
        token = self.target if self.target is not None else int(top1[-1])
        first = None
        for row in range(len(self.rows) - 1, -1, -1):  # from the end back, while it stays top-1
            if int(top1[row]) != token:
                break
            first = row
        return first


def residual_rows(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The stream after the embedding (positions added) and after every block: (1, T) -> (L+1, 1, T, C)."""
    L = model.config.n_layer
    names = ["blocks.0.resid_pre"] + [f"blocks.{i}.resid_post" for i in range(L)]
    _, cache = run_with_cache(model, idx, names=names)
    return torch.stack([cache[name] for name in names])  # (L+1, 1, T, C)


def logit_lens(model: GPT, ids: Ids, target: int | None = None, k: int = 5) -> Lens:
    """The logit lens of one prompt: every row of the residual stream through ln_f and the unembedding."""
    idx = prompt_batch(model, ids)  # (1, T)
    V = model.config.vocab_size
    if not 1 <= k <= V:
        raise UserError(f"k={k} is out of range: pick 1 … {V} (the vocabulary size)")
    if target is not None and not 0 <= target < V:
        raise UserError(f"target token id {target} is outside the vocabulary (0 … {V - 1})")
    stream = residual_rows(model, idx)[:, 0]  # (L+1, T, C)
    with evaluating(model), torch.no_grad():
        logits = model.lm_head(model.ln_f(stream))  # (L+1, T, C) -> (L+1, T, V)
    probs = torch.softmax(logits, dim=-1)  # (L+1, T, V)
    top = torch.topk(probs, k, dim=-1)  # (L+1, T, k) each
    lens = Lens(["embed"] + [f"block {i}" for i in range(model.config.n_layer)], top.indices, top.values, target)
    if target is not None:
        lens.target_prob = probs[..., target]  # (L+1, T)
        lens.target_rank = (probs > lens.target_prob[..., None]).sum(dim=-1)  # (L+1, T)
    return lens
