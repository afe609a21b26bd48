"""GPT: causality (PITFALL 1), a KV cache only where the mask makes it exact (PITFALL 17), the loss,
weight tying, parameter count, block_size, dropout, a real learning check and gradient accumulation
(PITFALL 11). Tiny configs, CPU."""

import math

import pytest
import torch
import torch.nn.functional as F

from kqv.config import GPTConfig
from kqv.models.gpt import GPT, GPTOutput
from kqv.nn.positional import POSITIONAL
from kqv.nn.scores import SCORES

V, BLOCK = 17, 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    values = dict(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16)
    values.update(kw)
    return GPT(GPTConfig(**values))


def tokens(b=2, t=BLOCK, seed=0, vocab=V):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def change_token(idx, t):
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1 + torch.arange(idx.shape[0])) % V  # a different token in every row
    return changed


@pytest.mark.parametrize("need_patterns", [False, True], ids=["fast", "eager"])
@pytest.mark.parametrize("score", list(SCORES))
@pytest.mark.parametrize("pos", list(POSITIONAL))
def test_causal_mask_later_tokens_never_change_earlier_logits(pos, score, need_patterns):
    model = tiny_gpt(pos_encoding=pos, score=score).eval()
    idx = tokens()
    with torch.no_grad():
        base = model(idx, need_patterns=need_patterns).logits
        for t in (0, 4, BLOCK - 1):
            changed = model(change_token(idx, t), need_patterns=need_patterns).logits
            torch.testing.assert_close(changed[:, :t], base[:, :t], atol=1e-6, rtol=0)
            assert (changed[:, t] - base[:, t]).abs().amax() > 1e-4  # while the changed position itself moves


@pytest.mark.parametrize("mask", ["none", "anticausal"])
@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_masks_that_see_the_future_leak_into_earlier_positions(mask, pos):
    model = tiny_gpt(pos_encoding=pos, mask=mask).eval()
    idx = tokens()
    t = BLOCK - 1
    with torch.no_grad():
        base = model(idx).logits
        changed = model(change_token(idx, t)).logits
    leak = (changed[:, :t] - base[:, :t]).abs().amax(dim=-1)  # (B, t) change at each earlier position
    assert leak.gt(1e-5).all()  # every earlier position sees the last token: this LM could read the answer


@pytest.mark.parametrize("mask, exact", [("causal", True), ("window:3", True), ("anticausal", True), ("none", False)])
def test_forward_refuses_a_kv_cache_where_the_mask_makes_it_inexact(mask, exact):
    model = tiny_gpt(mask=mask).eval()
    assert model.cache_exact is exact
    idx = tokens(b=1, t=4)
    with torch.no_grad():
        if exact:
            cached = model(idx, cache=model.new_cache(1)).logits
            torch.testing.assert_close(cached, model(idx).logits, atol=1e-6, rtol=0)
        else:
            cache = model.new_cache(1)
            with pytest.raises(ValueError, match="not exact for mask 'none'.*without a cache") as info:
                model(idx, cache=cache)
            assert "\n" not in str(info.value) and cache.length == 0  # refused before anything was written
            assert model(idx).logits.shape == (1, 4, V)  # without a cache it runs


def test_patterns_are_causal_and_named():
    model = tiny_gpt().eval()
    out = model(tokens(), need_patterns=True)
    assert isinstance(out, GPTOutput) and out.loss is None
    assert len(out.patterns) == model.config.n_layer
    upper = torch.ones(BLOCK, BLOCK, dtype=torch.bool).triu(1)
    for p in out.patterns:
        assert p.shape == (2, 2, BLOCK, BLOCK)
        torch.testing.assert_close(p.sum(-1), torch.ones(2, 2, BLOCK), atol=1e-6, rtol=0)
        assert not p[..., upper].any()
    assert model(tokens()).patterns is None


def test_loss_is_cross_entropy_of_the_logits():
    model = tiny_gpt()
    idx, targets = tokens(seed=1), tokens(seed=2)
    out = model(idx, targets)
    expected = F.cross_entropy(out.logits.reshape(-1, V), targets.reshape(-1))
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-6)
    # and by hand: mean over all B·T positions of −log softmax(logits)[target]
    logp = torch.log_softmax(out.logits.double(), dim=-1)
    by_hand = -logp.gather(-1, targets[..., None]).mean()
    assert abs(out.loss.item() - by_hand.item()) < 1e-5
    assert out.logits.shape == (2, BLOCK, V) and out.loss.dim() == 0


def test_lm_head_is_tied_to_the_token_embedding():
    model = tiny_gpt()
    assert model.lm_head.weight is model.tok_emb.weight
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(tokens(), tokens(seed=1)).loss.backward()
    opt.step()
    assert model.lm_head.weight is model.tok_emb.weight  # still one tensor after an update
    torch.testing.assert_close(model.lm_head.weight, model.tok_emb.weight, atol=0, rtol=0)


@pytest.mark.parametrize("pos", list(POSITIONAL))
@pytest.mark.parametrize("bias", [False, True])
def test_num_parameters_counts_each_unique_tensor_once(pos, bias):
    model = tiny_gpt(pos_encoding=pos, bias=bias)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())
    with_duplicates = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert with_duplicates - model.num_parameters() == V * 16  # the tied (V, C) matrix would count twice
    # by hand, for n_layer=2, C=16: per block 2 LayerNorms + q + kv + proj + MLP
    C, L = 16, 2
    ln = C * (2 if bias else 1)
    attn = C * C + 2 * C * C + C * C + ((C + 2 * C + C) if bias else 0)
    mlp = C * 4 * C + 4 * C * C + ((4 * C + C) if bias else 0)
    positions = BLOCK * C if pos == "learned" else 0  # sinusoidal is a buffer, rope/alibi have none
    assert model.num_parameters() == V * C + positions + L * (2 * ln + attn + mlp) + ln


def test_initial_loss_is_about_ln_vocab():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32))
    idx = torch.randint(0, 65, (4, 32), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 65, (4, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = model(idx, targets).loss.item()
    assert abs(loss - math.log(65)) < 0.3, loss


def test_init_is_gpt2s_small_normal_with_scaled_residual_projections():
    """normal(0, 0.02) everywhere; the two projections that write into the residual stream get
    0.02/√(2·n_layer), and nothing else does (the Q/K/V projection `in_proj` is not one of them)."""
    L = 4
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=L, n_head=4, n_embd=256))
    residual = 0.02 / math.sqrt(2 * L)
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        expected = residual if name.endswith(("attn.proj.weight", "mlp.proj.weight")) else 0.02
        assert abs(p.std().item() - expected) < 0.1 * expected, (name, p.std().item(), expected)
        assert abs(p.mean().item()) < 0.1 * expected, name


@pytest.mark.parametrize("pos", list(POSITIONAL))
def test_block_size_is_the_longest_input(pos):
    model = tiny_gpt(pos_encoding=pos).eval()
    with torch.no_grad():
        out = model(tokens(t=BLOCK), tokens(t=BLOCK, seed=1))
    assert out.logits.shape == (2, BLOCK, V) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match=f"length {BLOCK + 1} exceeds block_size {BLOCK}"):
        model(tokens(t=BLOCK + 1))


def test_dropout_is_random_in_training_and_off_in_eval():
    model = tiny_gpt(dropout=0.2)
    idx = tokens()
    model.train()
    a, b = model(idx).logits, model(idx).logits
    assert (a - b).abs().max() > 1e-4
    model.eval()
    with torch.no_grad():
        c, d = model(idx).logits, model(idx).logits
    assert torch.equal(c, d)
    torch.manual_seed(5)
    model.train()
    e = model(idx).logits
    torch.manual_seed(5)
    f = model(idx).logits
    assert torch.equal(e, f)  # random, but reproducible from the seed
    assert (e - c).abs().max() > 1e-4


def test_dropout_zero_train_equals_eval():
    model = tiny_gpt(dropout=0.0)
    idx = tokens()
    a = model.train()(idx).logits
    b = model.eval()(idx).logits
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32))
    idx = tokens(b=4, t=17, seed=3)
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    first = model(x, y).loss.item()
    for _ in range(100):
        loss = model(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    final = model(x, y).loss.item()
    assert abs(first - math.log(V)) < 0.3
    assert final < 0.3, (first, final)  # random tokens can only be memorised: the model learns


def test_gradient_accumulation_equals_one_big_batch():
    model = tiny_gpt(dropout=0.0)
    idx, targets = tokens(b=4, seed=4), tokens(b=4, seed=5)
    model.zero_grad()
    model(idx, targets).loss.backward()
    big = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for micro in (slice(0, 2), slice(2, 4)):
        (model(idx[micro], targets[micro]).loss / 2).backward()  # loss / k, summed over k micro-steps
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, big[name], atol=1e-6, rtol=1e-5, msg=name)
    assert sum(g.abs().sum() for g in big.values()) > 0


def test_gradient_accumulation_without_dividing_by_k_is_wrong():
    """The same check fails if the micro-batch losses are not divided by k: the test above can fail."""
    model = tiny_gpt(dropout=0.0)
    idx, targets = tokens(b=4, seed=4), tokens(b=4, seed=5)
    model.zero_grad()
    model(idx, targets).loss.backward()
    big = model.tok_emb.weight.grad.clone()
    model.zero_grad()
    for micro in (slice(0, 2), slice(2, 4)):
        model(idx[micro], targets[micro]).loss.backward()
    torch.testing.assert_close(model.tok_emb.weight.grad, 2 * big, atol=1e-6, rtol=1e-5)
