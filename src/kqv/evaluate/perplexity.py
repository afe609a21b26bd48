"""Perplexity: the mean plain negative log-likelihood per token, and exp of it — never the label-smoothed loss.

GPT          every validation token of a corpus scored once (consecutive windows of block_size), or
             `n_batches` random batches as training's evaluations do
translation  every target token of a set of pairs under teacher forcing, </s> included
"""

import math

import torch

from kqv.data.batching import fixed_batches as pair_batches
from kqv.data.parallel import encode_pairs
from kqv.data.text import consecutive_batches, fixed_batches, prepare_tokens, read_corpus
from kqv.runs.load import Run


@torch.no_grad()
def gpt_perplexity(
    run: Run, data: str | None, batch_size: int = 16, n_batches: int | None = None, seed: int = 0
) -> dict:
    """Mean loss (nats/token) and perplexity on the validation split of `data` (default: the run's corpus).

    By default every validation token is scored once (consecutive windows of block_size);
    `n_batches` scores that many random batches instead, as training's evaluations do.
    """
    corpus = read_corpus(data if data is not None else run.info["data"]["path"])
    tokens = prepare_tokens(corpus, run.tokenizer, None)
    device = next(run.model.parameters()).device
    T = run.model_config.block_size
    if n_batches is None:
        batches = consecutive_batches(tokens.val, T, batch_size)
    else:
        batches = fixed_batches(tokens.val, T, batch_size, n_batches, seed)
    total, count = 0.0, 0
    for x, y in batches:
        total += run.model(x.to(device), y.to(device)).loss.item() * y.numel()  # mean -> sum over targets
        count += y.numel()
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": count}


@torch.no_grad()
def translation_perplexity(run: Run, pairs: list[tuple[str, str]], batch_tokens: int = 4096) -> tuple[float, int]:
    """-> (mean plain NLL per target token, eos included; token count) under teacher forcing."""
    c = run.model_config
    device = next(run.model.parameters()).device
    examples, _ = encode_pairs(run.tokenizer, pairs, c.max_len)
    total, count = 0.0, 0
    for _, batch in pair_batches(examples, batch_tokens, c.pad_id, c.bos_id, c.eos_id):
        out = run.model(*(t.to(device) for t in batch[:3]))
        total += out.nll.item() * out.n_tokens
        count += out.n_tokens
    return total / max(count, 1), count
