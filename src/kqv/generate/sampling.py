"""Sampling text from a language model, one token at a time, with or without a KV cache.

Each step turns the last position's logits into a distribution and draws a token:
    temperature  divide the logits by T; below TEMPERATURE_FLOOR (1e-4), 0 included, greedy: always the argmax
    top-k        keep only the k most likely tokens
    top-p        keep the smallest set of most likely tokens whose probability
                 reaches p (always at least one token)
A seeded `torch.Generator` makes the draws reproducible. `generate` checks these values before the first
token (`check_sampling_values`): a temperature that is negative or not finite, top_k < 1, top_p outside
[0, 1] or NaN, or a seed outside 0 … 2^64 − 1 is a ValueError, never NaN probabilities mid-stream.

The context window. A model reads at most B = block_size tokens. When the text outgrows that:

    window   the model reads                         with a KV cache
    "slide"  exactly the last B tokens (default)     cached steps until the text first overflows, then one full
                                                     forward pass of the last B tokens per new token: every
                                                     position shifts by one, so every cached key changes
    "hop"    the last B − ⌊B/2⌋ + 1 … B tokens: the   one re-fill of the cache per half window and cached steps
             start jumps half a window at a time     in between (fast), but right after a jump the model reads
                                                     only B − ⌊B/2⌋ + 1 tokens

Worked example, B = 8 and 11 tokens (0 … 10): "slide" reads tokens 3 … 10, "hop" reads 4 … 10.
Measured by `kqv bench gpt --tokens 1000 --window slide|hop` on the default preset (random weights,
block 128, 2 cores, nothing else running), with a cache: slide 353–371 tokens/s, hop 764–818 tokens/s.

The mask. A cache is used only where the model's mask makes it exact (kqv.nn.masks: every mask but
"none"); elsewhere each step recomputes the window, silently. So with or without a cache the model reads
the same tokens and gives the same logits, for every mask and either window.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from kqv.generate.layout import column_major
from kqv.nn.masks import parse_mask

TEMPERATURE_FLOOR = 1e-4  # a temperature below this samples as 0 (greedy): softmax(logits / T) is one-hot by then
MAX_SEED = 2**64 - 1  # torch.Generator takes seeds 0 … 2^64 − 1
WINDOWS = ("slide", "hop")


def check_sampling_values(temperature: float, top_k: int | None, top_p: float | None, seed: int | None = None) -> None:
    """ValueError, one line, for a temperature that is negative or not finite, top_k < 1, top_p outside [0, 1]
    or a seed outside 0 … 2^64 − 1; checked before anything is generated."""
    if not isinstance(temperature, int | float) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number ≥ 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    if top_p is not None and not (isinstance(top_p, int | float) and 0.0 <= top_p <= 1.0):
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number in 0 … 2^64 − 1, got {seed}")


def is_greedy(temperature: float) -> bool:
    """Temperatures below TEMPERATURE_FLOOR (0 included) mean: always take the most likely token."""
    return temperature < TEMPERATURE_FLOOR


def check_window(window: str) -> None:
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; choose one of {', '.join(WINDOWS)}")


def window_start(n_tokens: int, block_size: int, window: str = "slide") -> int:
    """First token of the context the model reads when the text has n_tokens tokens (the table above)."""
    check_window(window)
    if n_tokens <= block_size:
        return 0
    if window == "slide":
        return n_tokens - block_size
    hop = max(1, block_size // 2)
    return -(-(n_tokens - block_size) // hop) * hop  # smallest multiple of hop leaving ≤ block_size tokens


def decodes_with_cache(model, use_cache: bool = True) -> bool:
    """Whether decoding `model` keeps a KV cache: when asked to and the model's mask makes one exact."""
    return use_cache and parse_mask(model.config.mask).cache_exact


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """(B, V) logits -> (B, V) logits with excluded tokens at -inf, scaled by 1/temperature.

    A greedy temperature (below TEMPERATURE_FLOOR) keeps only the most likely token, at logit 0:
    dividing by it would overflow to ±inf and make the softmax NaN."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    if top_p is not None and not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    if is_greedy(temperature):
        best = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.argmax(dim=-1, keepdim=True), True)
        return torch.zeros_like(logits).masked_fill(~best, float("-inf"))  # (B, V)
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
    """(B, V) logits of the last position -> (B,) token ids; a temperature below TEMPERATURE_FLOOR is greedy."""
    if is_greedy(temperature):
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
    window: str = "slide",
) -> Iterator[int] | Iterator[tuple[int, torch.Tensor]]:
    """Yield new token ids one by one (with their (V,) logits if `return_logits`).

    The sampling values, the prompt and the window are checked on the call, before the first token.
    `use_cache` asks for a KV cache; it is kept only where `decodes_with_cache` says it is exact.
    On the CPU, cached steps run on one thread: a one-token step is too small to split, and waking
    a second thread costs more than it saves (measured by `kqv bench gpt`); the full passes of a slid
    window, and uncached decoding, use every thread.
    """
    check_sampling_values(temperature, top_k, top_p, seed)
    check_window(window)
    if not prompt:
        raise ValueError("the prompt must hold at least one token")
    return _generate(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache, return_logits, window)


def _generate(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache, return_logits, window):
    device = next(model.parameters()).device
    threads = torch.get_num_threads()
    with cpu_threads(None), torch.inference_mode():  # (the thread setting is restored at the end)
        model.eval()
        decoder = Decoder(model, prompt, use_cache, window)
        generator = torch.Generator(device=device)
        if seed is not None:
            generator.manual_seed(seed)
        for _ in range(max_new_tokens):
            # cached steps on one CPU thread; a slid window's full pass on all of them
            wanted = 1 if device.type == "cpu" and not decoder.recomputes() else threads
            if torch.get_num_threads() != wanted:
                torch.set_num_threads(wanted)
            logits = decoder.next_logits()  # (1, V)
            token = int(next_token(logits, temperature, top_k, top_p, generator)[0])
            decoder.append(token)
            yield (token, logits[0]) if return_logits else token


class Decoder:
    """One growing text and the model state that goes with it: call next_logits(), pick a token, append() it.

    `use_cache` is the cache actually kept: False when not asked for or when the model's mask makes a
    cache inexact (`decodes_with_cache`). Holds no grad mode or thread setting between calls, so a server
    can take one step per request on any thread (under torch.inference_mode() each time).
    """

    def __init__(self, model, prompt: list[int], use_cache: bool = True, window: str = "slide"):
        check_window(window)
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        self.model, self.tokens, self.window = model, list(prompt), window
        self.use_cache = decodes_with_cache(model, use_cache)
        self.device = next(model.parameters()).device
        self.cache, self.cached_from = None, 0
        if self.device.type == "cpu":
            column_major(model)  # same weights, stored (in, out): one-token steps read them faster (once per model)

    def recomputes(self) -> bool:
        """Whether the next step is a full forward pass of the window: no cache, or a slid window, which moves
        every position (otherwise it feeds the newest token through the cache, or refills it once)."""
        start = window_start(len(self.tokens), self.model.config.block_size, self.window)
        return not self.use_cache or (self.window == "slide" and start > 0)

    def next_logits(self) -> torch.Tensor:
        """(1, V) logits for the token after the text, from the window of it the model reads (window_start)."""
        model, tokens = self.model, self.tokens
        start = window_start(len(tokens), model.config.block_size, self.window)
        if self.recomputes():
            self.cache = None
            return self._last_logits(tokens[start:])
        if self.cache is None or start != self.cached_from:  # first step, or the window hopped: refill
            self.cache = model.new_cache(batch=1, device=self.device)
            self.cached_from = start
            feed = tokens[start:]
        else:
            feed = tokens[self.cached_from + self.cache.length :]  # just the newest token(s)
        return self._last_logits(feed, self.cache)

    def _last_logits(self, feed: list[int], cache=None) -> torch.Tensor:
        return self.model(torch.tensor([feed], device=self.device), cache=cache).logits[:, -1]  # (1, V)

    def append(self, token: int) -> None:
        self.tokens.append(token)
