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
"""

from dataclasses import dataclass

import torch

from kqv.errors import UserError
from kqv.inspect.cache import run_with_cache
from kqv.inspect.prompt import Ids, check_position, evaluating, prompt_batch
from kqv.models.gpt import GPT


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
