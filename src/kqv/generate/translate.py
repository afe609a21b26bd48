"""Translating sentences with a trained encoder–decoder: batched by length, greedy or beam search.

Sentences are encoded, cut to what the model reads (max_len − 1 tokens, </s> takes one more),
grouped into batches of similar length within `batch_tokens` (kqv.data.batching.fixed_batches),
decoded by kqv.generate.beam, and put back in their original order.
"""

from kqv.data.batching import fixed_batches
from kqv.generate.beam import beam_search, greedy_decode


def translate(
    run,
    sentences: list[str],
    beam: int = 4,
    alpha: float = 0.6,
    batch_tokens: int = 4096,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
) -> list[str]:
    """Translate `sentences` in batches of similar length (beam 1: greedy); the output keeps their order.

    `run` is a kqv.runs.load.Run of the translation family."""
    c = run.model_config
    device = next(run.model.parameters()).device
    encoded = [ids[: c.max_len - 1] for ids in run.tokenizer.encode_batch(sentences)]  # (eos takes one more)
    examples = [(ids, []) for ids in encoded]
    out: list[str] = [""] * len(sentences)
    for indices, batch in fixed_batches(examples, batch_tokens, c.pad_id, c.bos_id, c.eos_id):
        src = batch.src.to(device)
        if beam == 1:
            hyps = greedy_decode(run.model, src, max_len_a, max_len_b)
        else:
            hyps = beam_search(run.model, src, beam, alpha, max_len_a, max_len_b)
        for i, hyp in zip(indices, hyps, strict=True):
            out[i] = run.tokenizer.decode(hyp.tokens)
    return out
