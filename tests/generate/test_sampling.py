"""Sampling (PITFALL 8) and cached generation (PITFALL 7, 17): temperature 0 is greedy, top-k keeps exactly k,
top-p keeps the smallest set reaching p and never nothing, seeds reproduce, cached and uncached
generation agree token for token past block_size under every mask, positional encoding and window
("slide", "hop"), each against a plain recomputation, and extreme sampling values (PITFALL 21) are
refused before the first token or, for temperatures → 0⁺, decode greedily."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kqv.config import GPTConfig
from kqv.generate.sampling import (
    MAX_SEED,
    TEMPERATURE_FLOOR,
    Decoder,
    decodes_with_cache,
    filter_logits,
    generate,
    is_greedy,
    next_token,
    window_start,
)
from kqv.models.gpt import GPT
from kqv.nn.positional import POSITIONAL
from tests.nn.sharp import sharp_gpt

V, BLOCK = 13, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_gpt(pos="learned", seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16, pos_encoding=pos, **kw))


def kept(logits: torch.Tensor) -> list[set[int]]:
    """(B, V) filtered logits -> per row, the set of token ids left finite."""
    return [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in logits]


# --- filter_logits and next_token -------------------------------------------------------------------------------


def test_temperature_zero_is_argmax():
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        assert torch.equal(next_token(logits, temperature=0, generator=g), logits.argmax(-1))


def test_temperature_divides_the_logits():
    logits = torch.randn(2, V, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(filter_logits(logits, 2.0, None, None), logits / 2, atol=0, rtol=0)
    torch.testing.assert_close(filter_logits(logits, 0.5, None, None), logits * 2, atol=0, rtol=0)
    # a very low temperature is (almost surely) greedy too
    g = torch.Generator().manual_seed(2)
    assert torch.equal(next_token(logits, temperature=1e-4, generator=g), logits.argmax(-1))


@pytest.mark.parametrize("k", [1, 2, 5, V - 1, V])
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(k))  # distinct values, no ties
    out = filter_logits(logits, 1.0, k, None)
    top = torch.topk(logits, k, dim=-1).indices
    assert kept(out) == [set(row.tolist()) for row in top]
    assert all(len(s) == k for s in kept(out))
    finite = torch.isfinite(out)
    torch.testing.assert_close(out[finite], logits[finite], atol=0, rtol=0)  # survivors are untouched


def test_top_k_samples_only_from_the_top_k_in_proportion():
    probs = torch.tensor([[0.1, 0.4, 0.05, 0.3, 0.15]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([next_token(probs.log(), 1.0, top_k=2, generator=g) for _ in range(4000)]).flatten()
    assert set(draws.tolist()) == {1, 3}
    frac = (draws == 1).float().mean().item()
    assert abs(frac - 0.4 / 0.7) < 0.03, frac  # renormalised over the two survivors: 4/7


# Hand-made distribution in scrambled order: token 3 has 0.5, token 0 0.25, token 4 0.15, token 1 0.06, token 2 0.04.
# Cumulative mass in order of likelihood: 0.5, 0.75, 0.9, 0.96, 1.0.
HAND_PROBS = torch.tensor([[0.25, 0.06, 0.04, 0.5, 0.15]], dtype=torch.float64)


@pytest.mark.parametrize(
    "p, expected",
    [
        (1e-9, {3}),  # p tiny: the most likely token stays
        (0.3, {3}),  # 0.5 ≥ 0.3
        (0.6, {3, 0}),  # 0.5 < 0.6 ≤ 0.75
        (0.8, {3, 0, 4}),  # 0.75 < 0.8 ≤ 0.9
        (0.95, {3, 0, 4, 1}),  # 0.9 < 0.95 ≤ 0.96
        (0.97, {3, 0, 4, 1, 2}),  # 0.96 < 0.97: every token
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(p, expected):
    out = filter_logits(HAND_PROBS.log(), 1.0, None, p)
    assert kept(out) == [expected]
    finite = torch.isfinite(out)
    torch.testing.assert_close(out[finite], HAND_PROBS.log()[finite], atol=0, rtol=0)


def test_top_p_keeps_at_least_one_token_even_when_one_token_has_almost_no_mass_missing():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, -10.0, -10.0, -10.0]])
    for p in (0.0, 1e-12, 1e-3):
        out = filter_logits(logits, 1.0, None, p)
        sizes = [len(s) for s in kept(out)]
        assert sizes == [1, 1], (p, sizes)
        assert kept(out)[1] == {0}
    g = torch.Generator().manual_seed(0)
    assert next_token(logits, 1.0, top_p=1e-9, generator=g)[1].item() == 0


def test_top_p_matches_a_brute_force_reference_row_by_row():
    logits = torch.randn(50, V, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2
    for p in (0.1, 0.5, 0.9):
        out = filter_logits(logits, 1.0, None, p)
        for row, got in zip(logits.numpy(), kept(out), strict=True):
            probs = np.exp(row - row.max())
            probs /= probs.sum()
            order = np.argsort(-probs)
            cum = np.cumsum(probs[order])
            if np.min(np.abs(cum - p)) < 1e-9:
                continue  # too close to the boundary to say
            n = int(np.argmax(cum >= p)) + 1  # the smallest prefix whose mass reaches p
            assert got == set(order[:n].tolist()), (p, row)


def test_top_p_per_row_in_a_batch():
    a = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64).log()
    b = torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64).log()  # same numbers, reversed order
    out = filter_logits(torch.stack([a, b]), 1.0, None, 0.8)
    assert kept(out) == [{0, 1}, {2, 1}]


def test_top_k_then_top_p_compose():
    logits = HAND_PROBS.log()
    out = filter_logits(logits, 1.0, 2, 0.999)  # top-2 first: {3, 0}; top-p within them keeps both
    assert kept(out) == [{3, 0}]


# --- window_start ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, block, start",
    [
        (1, 8, 0),
        (8, 8, 0),  # fits: read everything
        (9, 8, 4),  # one over: hop half a window (4), read 5 tokens
        (12, 8, 4),  # 8 tokens from 4: still fits
        (13, 8, 8),  # hop again
        (17, 8, 12),
        (10, 5, 6),  # hop = 5 // 2 = 2; ceil(5 / 2) = 3 hops
        (2, 1, 1),  # block 1: hop 1, read only the last token
        (7, 1, 6),
        (4, 3, 1),  # block 3: hop 1
    ],
)
def test_hop_window_start_hand_checked(n, block, start):
    assert window_start(n, block, "hop") == start


@pytest.mark.parametrize("n, block, start", [(1, 8, 0), (8, 8, 0), (9, 8, 1), (11, 8, 3), (17, 8, 9), (2, 1, 1)])
def test_slide_window_start_keeps_exactly_the_last_block_size_tokens(n, block, start):
    assert window_start(n, block, "slide") == start
    assert window_start(n, block) == start  # the default


def test_unknown_window_raises():
    with pytest.raises(ValueError, match="unknown window 'jump'.*slide, hop"):
        window_start(9, 8, "jump")
    with pytest.raises(ValueError, match="unknown window"):
        generate(tiny_gpt(), [1], 3, window="jump")


@pytest.mark.parametrize("block", [1, 2, 3, 8, 9])
def test_window_start_always_fits_and_hops_in_half_windows(block):
    hop = max(1, block // 2)
    previous = 0
    for n in range(1, 5 * block):
        s = window_start(n, block, "hop")
        assert 0 <= n - s <= block  # never more than block_size tokens
        assert s % hop == 0 and s >= previous  # moves forward, half a window at a time
        if n > block:
            assert n - s > block - hop  # and no further than needed
        previous = s


# --- generate --------------------------------------------------------------------------------------------------


def test_empty_prompt_raises():
    with pytest.raises(ValueError, match="prompt"):
        next(generate(tiny_gpt(), [], 3))


def test_greedy_generate_equals_a_hand_written_argmax_loop():
    model = tiny_gpt(seed=1).eval()
    prompt = [1, 2]
    got = list(generate(model, prompt, BLOCK - len(prompt), temperature=0))
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(BLOCK - len(prompt)):
            tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    assert got == tokens[len(prompt) :]
    assert list(generate(model, prompt, BLOCK - len(prompt), top_k=1, seed=3)) == got  # top-1 sampling is greedy


def test_same_seed_same_tokens_different_seed_different_tokens():
    model = tiny_gpt(seed=2)
    run = [list(generate(model, [0], 20, temperature=1.0, seed=s)) for s in (7, 7, 8)]
    assert run[0] == run[1]
    assert run[0] != run[2]  # near-uniform over 13 tokens: 20 equal draws by chance has probability ~13^-20
    assert len(set(run[0])) > 3  # a random model with temperature 1 is not stuck on one token


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.0, None, None), (0.8, 5, 0.9)])
@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_cached_and_uncached_generate_agree_past_block_size(pos, temperature, top_k, top_p):
    model = tiny_gpt(pos, seed=3)
    n_new = 3 * BLOCK  # the window hops several times; learned positions would fail without cropping
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=11, return_logits=True)
    cached = list(generate(model, [1, 2, 3], n_new, use_cache=True, **kw))
    uncached = list(generate(model, [1, 2, 3], n_new, use_cache=False, **kw))
    assert len(cached) == len(uncached) == n_new
    assert [t for t, _ in cached] == [t for t, _ in uncached]
    for (_, a), (_, b) in zip(cached, uncached, strict=True):
        assert a.shape == (V,)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_generate_logits_are_the_models_last_position_logits_over_the_window():
    model = tiny_gpt("rope", seed=4).eval()
    prompt = [5, 6, 7]
    out = list(generate(model, prompt, 2 * BLOCK, temperature=0, return_logits=True))
    tokens = prompt + [t for t, _ in out]
    with torch.no_grad():
        for i, (token, logits) in enumerate(out):
            n = len(prompt) + i  # tokens known before this step
            window = tokens[max(0, n - BLOCK) : n]  # the default window slides: the last BLOCK tokens
            expected = model(torch.tensor([window])).logits[0, -1]
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
            assert token == int(expected.argmax())


def test_generate_is_lazy_and_leaves_the_model_in_eval_mode():
    model = tiny_gpt(dropout=0.1).train()
    gen = generate(model, [1], 5, temperature=0)
    first = next(gen)
    assert not model.training  # sampling with dropout on would be noise
    assert first == list(generate(model, [1], 1, temperature=0))[0]


def test_generate_with_a_long_prompt_crops_it():
    model = tiny_gpt("learned", seed=5)
    prompt = list(range(V)) * 2  # 26 tokens > block_size 8
    got = list(generate(model, prompt, 4, temperature=0, use_cache=True))
    assert got == list(generate(model, prompt, 4, temperature=0, use_cache=False))
    assert all(0 <= t < V for t in got)


def test_cached_generate_works_for_a_bfloat16_model():
    model = tiny_gpt(seed=6).to(torch.bfloat16)
    uncached = list(generate(model, [1, 2], 5, temperature=0, use_cache=False))
    assert list(generate(model, [1, 2], 5, temperature=0, use_cache=True)) == uncached


def test_sampling_follows_the_model_distribution():
    logits = torch.tensor([[math.log(0.6), math.log(0.3), math.log(0.1)]])
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([next_token(logits, 1.0, generator=g) for _ in range(4000)])
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.03, rtol=0)


# --- every mask × positional encoding × window, against a plain recomputation (PITFALL 7, 17) --------------------

EVERY_MASK = ["causal", "none", "anticausal", "window:1", "window:3", f"window:{BLOCK}", f"window:{BLOCK + 3}"]


def random_gpt(pos, mask, dtype=torch.float32, seed=0):
    config = GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=3, n_head=2, n_embd=16, pos_encoding=pos, mask=mask)
    return sharp_gpt(config, seed, dtype)


def reference_start(n: int, window: str) -> int:
    """Where the model's window begins when the text has n tokens, written out: slide keeps the last BLOCK
    tokens; hop moves the start half a block at a time, only as far as needed."""
    if window == "slide":
        return max(0, n - BLOCK)
    start = 0
    while n - start > BLOCK:
        start += BLOCK // 2
    return start


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("window", ["slide", "hop"])
@pytest.mark.parametrize("mask", EVERY_MASK)
@pytest.mark.parametrize("pos", list(POSITIONAL))
def test_greedy_generation_past_the_context_equals_a_fresh_forward_over_the_window(pos, mask, window, dtype, tol):
    model, prompt, n_new = random_gpt(pos, mask, dtype), [1, 2, 3], 2 * BLOCK + 2  # the window moves 4 times
    for use_cache in (True, False):
        kw = dict(temperature=0, use_cache=use_cache, window=window, return_logits=True)
        out = list(generate(model, prompt, n_new, **kw))
        text = prompt + [token for token, _ in out]
        with torch.no_grad():
            for i, (token, logits) in enumerate(out):
                n = len(prompt) + i  # tokens known before this step
                expected = model(torch.tensor([text[reference_start(n, window) : n]])).logits[0, -1]  # (V,)
                torch.testing.assert_close(logits, expected, atol=tol, rtol=tol)
                assert token == int(expected.argmax())


def test_slide_and_hop_read_different_windows_right_after_the_context_overflows():
    model, prompt = random_gpt("learned", "causal"), list(range(BLOCK))
    slide = [logits for _, logits in generate(model, prompt, 2, temperature=0, return_logits=True, window="slide")]
    hop = [logits for _, logits in generate(model, prompt, 2, temperature=0, return_logits=True, window="hop")]
    torch.testing.assert_close(slide[0], hop[0], atol=0, rtol=0)  # BLOCK tokens: both read them all
    assert (slide[1] - hop[1]).abs().max() > 1e-3  # BLOCK + 1 tokens: the last BLOCK vs the last BLOCK/2 + 1


def forward_calls(model, run) -> list[tuple[int, bool]]:
    """(tokens fed, whether a cache was passed) for each call of model.forward while run() runs."""
    calls = []
    handle = model.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append((args[0].shape[1], kwargs.get("cache") is not None)), with_kwargs=True
    )
    try:
        run()
    finally:
        handle.remove()
    return calls


@pytest.mark.parametrize("mask", ["causal", "window:3", "anticausal"])
def test_slide_caches_until_the_text_overflows_then_recomputes_the_last_block_size_tokens(mask):
    model, prompt = random_gpt("rope", mask), [1, 2, 3]
    calls = forward_calls(model, lambda: list(generate(model, prompt, 2 * BLOCK, temperature=0, window="slide")))
    steps_in_context = BLOCK - len(prompt)  # steps whose text (3 … BLOCK − 1 tokens before the step) still fits
    assert calls == [(3, True)] + [(1, True)] * steps_in_context + [(BLOCK, False)] * (2 * BLOCK - 1 - steps_in_context)


def test_hop_refills_the_cache_once_per_half_window():
    model, prompt, half = random_gpt("learned", "causal"), [1, 2, 3], BLOCK // 2
    calls = forward_calls(model, lambda: list(generate(model, prompt, 2 * BLOCK, temperature=0, window="hop")))
    refills = [i for i, (n, cached) in enumerate(calls) if n > 1]
    assert all(cached for _, cached in calls)
    assert [calls[i][0] for i in refills] == [3, half + 1, half + 1, half + 1]  # the prompt, then each hop
    assert len(calls) == 2 * BLOCK


@pytest.mark.parametrize("window", ["slide", "hop"])
def test_mask_none_decodes_without_a_cache_even_when_one_is_asked_for(window):
    model = random_gpt("alibi", "none")
    assert not decodes_with_cache(model, use_cache=True) and not Decoder(model, [1]).use_cache
    calls = forward_calls(model, lambda: list(generate(model, [1, 2, 3], 2 * BLOCK, temperature=0, window=window)))
    assert not any(cached for _, cached in calls)
    assert decodes_with_cache(random_gpt("alibi", "anticausal")) and not decodes_with_cache(model, use_cache=False)


@pytest.mark.parametrize("mask", EVERY_MASK)
def test_generate_cached_uncached_and_a_decoder_loop_agree_when_sampling(mask):
    """The CLI (generate, cache asked for), the lab (use_cache=False, temperature 0.8, seed 1) and the page
    (a Decoder with its defaults, one draw per step) give the same text under every mask."""
    model, prompt, n_new = random_gpt("rope", mask), [4, 5], 2 * BLOCK
    cli = list(generate(model, prompt, n_new, temperature=0.8, seed=1))
    lab = list(generate(model, prompt, n_new, temperature=0.8, seed=1, use_cache=False))
    decoder, generator, page = Decoder(model, prompt), torch.Generator().manual_seed(1), []
    with torch.inference_mode():
        for _ in range(n_new):
            page.append(int(next_token(decoder.next_logits(), 0.8, None, None, generator)[0]))
            decoder.append(page[-1])
    assert cli == lab == page
    assert len(set(cli)) > 2  # sampled, not stuck on one token


# --- sampling values that cannot break it (PITFALL 21) ------------------------------------------------------------

BAD_VALUES = [
    dict(temperature=float("nan")),
    dict(temperature=float("inf")),
    dict(temperature=-1.0),
    dict(top_p=float("nan")),
    dict(top_p=1.5),
    dict(top_p=-0.1),
    dict(top_k=0),
    dict(seed=2**64),
    dict(seed=-1),
]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=[f"{k}={v}" for d in BAD_VALUES for k, v in d.items()])
def test_bad_sampling_values_raise_on_the_call_before_any_token(bad):
    model = tiny_gpt().train()
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"^{name} must be") as info:
        generate(model, [1, 2], 5, **{"temperature": 1.0, **bad})  # no next(): the call itself refuses
    assert "\n" not in str(info.value)
    assert model.training  # nothing ran: generation would have put the model in eval mode


@pytest.mark.parametrize("temperature", [0.0, 5e-324, 1e-300, 1e-30, 9.9e-5])
def test_temperatures_below_the_floor_decode_greedily(temperature):
    assert TEMPERATURE_FLOOR == 1e-4 and is_greedy(temperature) and not is_greedy(TEMPERATURE_FLOOR)
    model = tiny_gpt(seed=7)
    greedy = list(generate(model, [1, 2], 2 * BLOCK, temperature=0))
    assert list(generate(model, [1, 2], 2 * BLOCK, temperature=temperature, top_p=0.9, seed=3)) == greedy
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(filter_logits(logits, temperature, None, None), dim=-1)  # logits / T would be ±inf: NaN
    torch.testing.assert_close(probs, F.one_hot(logits.argmax(-1), V).float(), atol=0, rtol=0)


def test_a_temperature_just_above_the_floor_still_divides_and_samples():
    logits = torch.tensor([[0.0, 1e-5, 3e-5]])  # gaps of the floor's order: /1e-4 -> 0, 0.1, 0.3
    torch.testing.assert_close(filter_logits(logits, 1e-4, None, None), logits / 1e-4, atol=0, rtol=0)
    draws = {int(next_token(logits, 1e-4, generator=torch.Generator().manual_seed(s))[0]) for s in range(40)}
    assert draws == {0, 1, 2}  # near-uniform: not greedy


def test_the_largest_seed_is_accepted_and_seeds_the_generator_with_it():
    model = tiny_gpt(seed=8).eval()
    prompt, n_new = [3], BLOCK - 1  # within the context: the hand loop needs no window
    got = list(generate(model, prompt, n_new, temperature=1.0, seed=MAX_SEED))
    assert got == list(generate(model, prompt, n_new, temperature=1.0, seed=MAX_SEED))
    generator, text = torch.Generator().manual_seed(2**64 - 1), list(prompt)  # by hand: softmax, multinomial
    with torch.no_grad():
        for _ in range(n_new):
            probs = torch.softmax(model(torch.tensor([text])).logits[0, -1], dim=-1)
            text.append(int(torch.multinomial(probs[None], 1, generator=generator)[0, 0]))
    assert got == text[len(prompt) :]
