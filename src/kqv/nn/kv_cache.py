"""The key/value cache for autoregressive decoding, as an explicit object.

Generating token t+1 needs the keys and values of tokens 0…t in every layer;
under a causal mask they do not change once computed, so they are kept instead of
recomputed. Whether that holds is a property of the mask (`MaskSpec.cache_exact`
in kqv.nn.masks: yes for causal, window:N and anticausal, no for none), and a GPT
refuses a cache where it does not. Buffers, per layer:

    k, v: (B, nh, max_len, hs)   filled up to `length` positions

`LayerCache.append(k_new, v_new, start)` writes positions start … start+T−1 and
returns views of positions 0 … start+T−1. The prefill (the whole prompt at once)
goes through the same path, so the causal mask still applies inside it.
"""

import torch


class LayerCache:
    def __init__(self, batch: int, n_head: int, max_len: int, head_size: int, device=None, dtype=None) -> None:
        shape = (batch, n_head, max_len, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (B, nh, max_len, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # (B, nh, max_len, hs)
        self.length = 0

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k_new, v_new: (B, nh, T, hs) for positions start … start+T−1 -> (B, nh, start+T, hs) each."""
        end = start + k_new.shape[2]
        if start != self.length:
            raise ValueError(f"cache holds {self.length} positions; cannot append at position {start}")
        if end > self.k.shape[2]:
            raise ValueError(f"cache is full: {end} positions do not fit in {self.k.shape[2]}")
        self.k.narrow(2, start, end - start).copy_(k_new)
        self.v.narrow(2, start, end - start).copy_(v_new)
        self.length = end
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)


class KVCache:
    """One LayerCache per transformer block; `length` is how many positions are cached."""

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_size: int, device=None, dtype=None):
        self.layers = [LayerCache(batch, n_head, max_len, head_size, device, dtype) for _ in range(n_layer)]
        self.max_len = max_len

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reset(self) -> None:
        for layer in self.layers:
            layer.length = 0
