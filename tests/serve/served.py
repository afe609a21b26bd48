"""The models the API tests serve, built once per test process: random weights, no training."""

from functools import cache

from kqv.families import load_subject
from kqv.serve.explorer import Explorer


@cache
def subjects():
    """A GPT (`tiny`: char tokenizer, block_size 32) and a translation model (`translate/tiny`: BPE, max_len 64)."""
    return load_subject(preset="tiny", seed=0), load_subject(preset="translate/tiny", seed=0)


def explorers() -> list[Explorer]:
    """Fresh explorers ("gpt", "translation") over the shared models; tests must not change the weights."""
    gpt, translation = subjects()
    return [Explorer("gpt", gpt), Explorer("translation", translation)]
