"""The KV cache (PITFALL 7): cached logits equal uncached logits at every position, the prefill still
applies the causal mask, buffers have the documented shapes, and misuse is a loud error."""

import pytest
import torch

from kqv.config import GPTConfig
from kqv.models.gpt import GPT
from kqv.nn.kv_cache import KVCache, LayerCache
from kqv.nn.positional import POSITIONAL
from tests.nn.sharp import sharp_gpt

V, BLOCK = 13, 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_gpt(pos="learned", mask="causal", score="scaled_dot", seed=0, **kw):
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16, pos_encoding=pos, mask=mask, score=score, **kw
    )
    return GPT(config).eval()


def tokens(b=2, t=BLOCK, seed=0):
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def cached_logits(model, idx, chunks):
    """Feed idx through a fresh cache in pieces of the given lengths -> (B, T, V) logits."""
    cache = model.new_cache(idx.shape[0])
    out, start = [], 0
    for n in chunks:
        out.append(model(idx[:, start : start + n], cache=cache).logits)
        start += n
        assert cache.length == start
    assert start == idx.shape[1]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("mask", ["causal", "window:3"])
@pytest.mark.parametrize("pos", list(POSITIONAL))
def test_prefill_then_one_token_at_a_time_equals_uncached(pos, mask):
    model, idx = tiny_gpt(pos, mask), tokens()
    with torch.no_grad():
        full = model(idx).logits  # (B, T, V)
    prompt = 5
    cached = cached_logits(model, idx, [prompt] + [1] * (BLOCK - prompt))
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_chunked_prefill_equals_uncached(pos):
    model, idx = tiny_gpt(pos), tokens(seed=1)
    with torch.no_grad():
        full = model(idx).logits
    cached = cached_logits(model, idx, [3, 4, 1, 4])  # chunks of > 1 token after the first need an offset mask
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("score", ["dot", "cosine", "additive", "squared_dot"])
def test_cache_works_for_every_score(score):
    model, idx = tiny_gpt("rope", score=score), tokens(seed=2)
    with torch.no_grad():
        full = model(idx).logits
    cached = cached_logits(model, idx, [4] + [1] * (BLOCK - 4))
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_prefill_still_applies_the_causal_mask(pos):
    model = tiny_gpt(pos)
    idx = tokens(t=8, seed=3)
    changed = idx.clone()
    changed[:, 5] = (changed[:, 5] + 1) % V
    a = cached_logits(model, idx, [8])
    b = cached_logits(model, changed, [8])
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-6, rtol=0)  # earlier positions untouched
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-4  # the change does reach its own and later positions


def test_kv_buffer_shapes_and_filled_length():
    model = tiny_gpt()
    cache = model.new_cache(batch=3)
    c = model.config
    assert isinstance(cache, KVCache) and len(cache.layers) == c.n_layer and cache.max_len == BLOCK
    for layer in cache.layers:
        assert layer.k.shape == layer.v.shape == (3, c.n_head, BLOCK, c.head_size)  # (B, nh, max_len, hs)
    with torch.no_grad():
        model(tokens(b=3, t=4), cache=cache)
    assert cache.length == 4
    assert all(layer.length == 4 for layer in cache.layers)
    for layer in cache.layers:
        assert layer.k[:, :, :4].abs().sum() > 0 and layer.k[:, :, 4:].abs().sum() == 0  # only 4 positions written
    assert model.new_cache(batch=1, max_len=7).layers[0].k.shape == (1, c.n_head, 7, c.head_size)
    cache.reset()
    assert cache.length == 0


def test_layer_cache_append_returns_everything_so_far():
    cache = LayerCache(batch=2, n_head=3, max_len=6, head_size=4)
    k1, v1 = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    k2, v2 = torch.randn(2, 3, 3, 4), torch.randn(2, 3, 3, 4)
    k, v = cache.append(k1, v1, start=0)
    assert torch.equal(k, k1) and torch.equal(v, v1)
    k, v = cache.append(k2, v2, start=2)
    assert k.shape == (2, 3, 5, 4) and cache.length == 5
    assert torch.equal(k, torch.cat([k1, k2], dim=2)) and torch.equal(v, torch.cat([v1, v2], dim=2))


def test_append_past_max_len_raises():
    cache = LayerCache(batch=1, n_head=1, max_len=4, head_size=2)
    cache.append(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2), start=0)
    with pytest.raises(ValueError, match="full.*5.*4"):
        cache.append(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), start=3)
    assert cache.length == 3  # the failed append changed nothing


@pytest.mark.parametrize("start", [0, 2, 4])
def test_append_at_the_wrong_position_raises(start):
    cache = LayerCache(batch=1, n_head=1, max_len=8, head_size=2)
    cache.append(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2), start=0)
    with pytest.raises(ValueError, match=f"holds 3 positions.*position {start}"):
        cache.append(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), start=start)


def test_model_refuses_to_grow_the_cache_past_block_size():
    model = tiny_gpt("rope")
    cache = model.new_cache(batch=1)
    with torch.no_grad():
        model(tokens(b=1, t=BLOCK), cache=cache)
        with pytest.raises(ValueError, match="block_size"):
            model(tokens(b=1, t=1), cache=cache)


def test_cache_dtype_follows_the_request():
    model = tiny_gpt().double()
    cache = model.new_cache(batch=1, dtype=torch.float64)
    assert cache.layers[0].k.dtype == torch.float64
    idx = tokens(b=1)
    with torch.no_grad():
        full = model(idx).logits
    cache_logits = []
    with torch.no_grad():
        cache_logits.append(model(idx[:, :6], cache=cache).logits)
        for t in range(6, BLOCK):
            cache_logits.append(model(idx[:, t : t + 1], cache=cache).logits)
    torch.testing.assert_close(torch.cat(cache_logits, 1), full, atol=1e-12, rtol=1e-12)


def test_default_cache_matches_the_model_dtype():
    model = tiny_gpt().to(torch.bfloat16)
    cache = model.new_cache(batch=1)
    assert cache.layers[0].k.dtype == torch.bfloat16


# --- the cache under every mask (PITFALL 17) ----------------------------------------------------------------------

EVERY_MASK = ["causal", "none", "anticausal", "window:1", "window:3", f"window:{BLOCK}", f"window:{BLOCK + 5}"]
CACHE_EXACT = [m for m in EVERY_MASK if m != "none"]


def random_gpt(pos, mask, dtype=torch.float32, seed=0):
    config = GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=3, n_head=2, n_embd=16, pos_encoding=pos, mask=mask)
    return sharp_gpt(config, seed, dtype)


@torch.no_grad()
def decode_step_by_step(model, idx, prompt):
    """Prefill `prompt` tokens, then one token per call -> the newest position's logits after each call, (B, V) each."""
    cache = model.new_cache(idx.shape[0])
    out = [model(idx[:, :prompt], cache=cache).logits[:, -1]]
    for t in range(prompt, idx.shape[1]):
        out.append(model(idx[:, t : t + 1], cache=cache).logits[:, -1])
    return out


@torch.no_grad()
def recomputed(model, idx, prompt):
    """The reference: a fresh full forward pass over each prefix, its last position's logits."""
    return [model(idx[:, : t + 1]).logits[:, -1] for t in range(prompt - 1, idx.shape[1])]


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("mask", CACHE_EXACT)
@pytest.mark.parametrize("pos", list(POSITIONAL))
def test_cached_decoding_equals_recomputation_for_every_cache_exact_mask(pos, mask, dtype, tol):
    model, idx = random_gpt(pos, mask, dtype), tokens(b=2, t=BLOCK, seed=4)
    for got, expected in zip(decode_step_by_step(model, idx, 4), recomputed(model, idx, 4), strict=True):
        torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("pos", list(POSITIONAL))
def test_a_cache_would_be_wrong_for_mask_none_so_it_is_refused(pos):
    model, idx = random_gpt(pos, "none"), tokens(b=2, t=BLOCK, seed=4)
    with pytest.raises(ValueError, match="'none'"):
        decode_step_by_step(model, idx, 4)
    model.cache_exact = True  # pretend, to see what the refusal prevents
    stale = decode_step_by_step(model, idx, 4)
    worst = max((a - b).abs().max().item() for a, b in zip(stale, recomputed(model, idx, 4), strict=True))
    assert worst > 1e-3, worst  # earlier keys of deeper layers changed as the text grew: the cache is stale
