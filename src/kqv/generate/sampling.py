"""Sampling text from a language model, one token at a time, with or without a KV cache.

Each step turns the last position's logits into a distribution and draws a token:
    temperature  divide the logits by T (T = 0 means greedy: always the argmax)
    top-k        keep only the k most likely tokens
    top-p        keep the smallest set of most likely tokens whose probability
                 reaches p (always at least one token)
A seeded `torch.Generator` makes the draws reproducible.

The context window. A model reads at most block_size tokens. When the text
outgrows that, kqv drops the oldest tokens half a window at a time: the model
then reads the last block_size − block_size/2 … block_size tokens. With a KV cache
this means one re-fill of the cache per half window instead of a full forward pass
per token, and without a cache kqv feeds exactly the same window, so cached and
uncached decoding see the same context and give the same logits.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from kqv.generate.layout import column_major


def window_start(n_tokens: int, block_size: int) -> int:
    """First token of the context the model reads when the text has n_tokens tokens."""
    if n_tokens <= block_size:
        return 0
    hop = max(1, block_size // 2)
    return -(-(n_tokens - block_size) // hop) * hop  # smallest multiple of hop leaving ≤ block_size tokens


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """(B, V) logits -> (B, V) logits with excluded tokens at -inf, scaled by 1/temperature."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    if top_p is not None and not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (B, V)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already ≥ p
        drop[:, 0] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, V) logits of the last position -> (B,) token ids."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits.float(), temperature, top_k, top_p), dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@contextmanager
def cpu_threads(n: int | None):
    """Run with n intra-op threads (None: leave as is), restoring the setting afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generate(
    model,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    return_logits: bool = False,
) -> Iterator[int] | Iterator[tuple[int, torch.Tensor]]:
    """Yield new token ids one by one (with their (V,) logits if `return_logits`).

    On the CPU, cached decoding runs on one thread: a one-token step is too small to split,
    and waking a second thread costs more than it saves (measured by `kqv bench gpt`).
    """
    if not prompt:
        raise ValueError("the prompt must hold at least one token")
    device = next(model.parameters()).device
    one_thread = use_cache and device.type == "cpu"
    with cpu_threads(1 if one_thread else None), torch.inference_mode():
        yield from _generate(
            model, device, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache, return_logits
        )


def _generate(model, device, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache, return_logits):
    model.eval()
    decoder = Decoder(model, prompt, use_cache)
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    for _ in range(max_new_tokens):
        logits = decoder.next_logits()  # (1, V)
        token = int(next_token(logits, temperature, top_k, top_p, generator)[0])
        decoder.append(token)
        yield (token, logits[0]) if return_logits else token


class Decoder:
    """One growing text and the model state that goes with it: call next_logits(), pick a token, append() it.

    Holds no grad mode or thread setting between calls, so a server can take one step per request
    on any thread (under torch.inference_mode() each time).
    """

    def __init__(self, model, prompt: list[int], use_cache: bool = True):
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        self.model, self.tokens, self.use_cache = model, list(prompt), use_cache
        self.device = next(model.parameters()).device
        self.cache, self.cached_from = None, 0
        if self.device.type == "cpu":
            column_major(model)  # same weights, stored (in, out): one-token steps read them faster (once per model)

    def next_logits(self) -> torch.Tensor:
        """(1, V) logits for the token after the text, from the last block_size-window of it."""
        model, tokens = self.model, self.tokens
        start = window_start(len(tokens), model.config.block_size)
        if not self.use_cache:
            return model(torch.tensor([tokens[start:]], device=self.device)).logits[:, -1]  # (1, V)
        if self.cache is None or start != self.cached_from:  # first step, or the window moved: refill
            self.cache = model.new_cache(batch=1, device=self.device)
            self.cached_from = start
            feed = tokens[start:]
        else:
            feed = tokens[self.cached_from + self.cache.length :]  # just the newest token
        return model(torch.tensor([feed], device=self.device), cache=self.cache).logits[:, -1]  # (1, V)

    def append(self, token: int) -> None:
        self.tokens.append(token)
