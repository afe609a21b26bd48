"""kqv.inspect.source against references written here: NumPy for the attention maps, a hand-run
forward pass with autograd for the gradients, single hooked runs for the patching sweep.

Tolerances: float32 models, so attention maps to 1e-6, gradients to 1e-5 relative, logits of a
patched batch against an unbatched run to 1e-5 (different batch sizes may round differently).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kqv.config import TransformerConfig
from kqv.errors import UserError
from kqv.inspect.cache import hook_points, hooks, run_with_cache
from kqv.inspect.contrast import Contrast, top_two
from kqv.inspect.source import decoder_lens, patched_logits, source_attribution, source_patching
from kqv.models.transformer import Transformer
from kqv.nn.positional import sinusoidal_table

V, S, T = 40, 7, 6
BOS, EOS = 1, 2


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def tiny(norm_first: bool, **kw) -> Transformer:
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=V, max_len=32, n_layer_enc=3, n_layer_dec=2, n_head=2, n_embd=16, d_ff=24, dropout=0.0,
        norm_first=norm_first, **kw,
    )  # fmt: skip
    return Transformer(config).eval()


def sentence(seed: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    src = [*torch.randint(3, V, (S - 1,), generator=g).tolist(), EOS]
    tgt_in = [BOS, *torch.randint(3, V, (T - 1,), generator=g).tolist()]
    return src, tgt_in


def no_hooks_left(model) -> bool:
    return all(not p._forward_hooks and not p._forward_pre_hooks for p in hook_points(model).values())


# --- attention maps --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
def test_cross_and_rollout_match_numpy(norm_first):
    model = tiny(norm_first)
    src, tgt_in = sentence(1)
    got = source_attribution(model, src, tgt_in, steps=2)
    _, cache = run_with_cache(model, torch.tensor([src]), torch.tensor([tgt_in]))

    cross = [cache[f"decoder.{i}.cross_attn.pattern"][0].numpy().astype(np.float64) for i in range(2)]  # (nh, T, S)
    cross_layers = np.stack([p.mean(axis=0) for p in cross])  # (Ld, T, S)
    np.testing.assert_allclose(got.cross_layers.numpy(), cross_layers, atol=1e-6)
    np.testing.assert_allclose(got.cross.numpy(), cross_layers.mean(axis=0), atol=1e-6)

    rollout = np.eye(S)
    for i in range(3):  # Â_i = rownorm(mean_h A_i + I), multiplied on the left layer by layer
        mixing = cache[f"encoder.{i}.self_attn.pattern"][0].numpy().astype(np.float64).mean(axis=0) + np.eye(S)
        rollout = (mixing / mixing.sum(axis=1, keepdims=True)) @ rollout
    np.testing.assert_allclose(got.encoder_rollout.numpy(), rollout, atol=1e-6)
    np.testing.assert_allclose(got.rollout.numpy(), cross_layers.mean(axis=0) @ rollout, atol=1e-6)
    np.testing.assert_allclose(got.rollout.sum(dim=1).numpy(), np.ones(T), atol=1e-6)
    assert not np.allclose(got.rollout.numpy(), got.cross.numpy(), atol=1e-3)  # the encoder really mixes


# --- gradients -------------------------------------------------------------------------------------------------


def reference_scores(model, src, tgt_in, scale_e, measure="logprob"):
    """f_t for every t at token embeddings scale_e·E[src], by a hand-run forward; and e, the leaf (1, S, C)."""
    C = model.config.n_embd
    src_t, tgt = torch.tensor([src]), torch.tensor([tgt_in])
    e = model.embed(src_t).detach()  # (1, S, C)
    x = (scale_e * e).requires_grad_()
    stream = x * math.sqrt(C) + sinusoidal_table(32, C)[:S]  # (1, S, C): embed_src, written out
    src_pad = src_t == model.config.pad_id
    for layer in model.encoder:
        stream, _ = layer(stream, src_pad)
    logits, _ = model.decode(tgt, model.memory_kv(model.ln_enc(stream)), src_pad)  # (1, T, V)
    values = F.log_softmax(logits[0], dim=-1) if measure == "logprob" else logits[0]  # (T, V)
    return values, x, e


@pytest.mark.parametrize("norm_first", [False, True])
def test_grad_x_input_and_integrated_gradients_match_autograd(norm_first):
    model = tiny(norm_first)
    src, tgt_in = sentence(2)
    steps = 4
    got = source_attribution(model, src, tgt_in, steps=steps, chunk=5)  # 6·(4+2) rows in chunks of 5

    values, x, e = reference_scores(model, src, tgt_in, 1.0)
    targets = [*tgt_in[1:], int(values[-1].argmax())]
    assert got.targets == targets
    grad_x_input = torch.stack([(e * torch.autograd.grad(values[t, targets[t]], x, retain_graph=True)[0]).sum(-1)[0]
                                for t in range(T)])  # fmt: skip
    torch.testing.assert_close(got.grad_x_input, grad_x_input, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.value, values.gather(1, torch.tensor(targets)[:, None])[:, 0].detach())

    integrated = torch.zeros(T, S)
    for k in range(steps):
        values, x, _ = reference_scores(model, src, tgt_in, (k + 0.5) / steps)
        for t in range(T):
            (grad,) = torch.autograd.grad(values[t, targets[t]], x, retain_graph=True)
            integrated[t] += (e * grad).sum(-1)[0] / steps
    torch.testing.assert_close(got.integrated, integrated, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got.integrated, got.grad_x_input, atol=1e-3)


@pytest.mark.parametrize("norm_first", [False, True])
def test_integrated_gradients_are_complete_to_one_percent_at_32_steps(norm_first):
    # GELU: the midpoint rule's error falls as 1/m² on a smooth path. With ReLU (the default) the
    # integrand jumps at every kink and the error falls only as 1/m (about 3% at 32 steps here).
    model = tiny(norm_first, activation="gelu")
    model.train()  # the call must run in eval mode and give the mode back
    src, tgt_in = sentence(3)
    got = source_attribution(model, src, tgt_in, steps=32)
    assert model.training and no_hooks_left(model)
    assert all(p.grad is None for p in model.parameters())

    model.eval()
    baseline, _, _ = reference_scores(model, src, tgt_in, 0.0)  # token embeddings 0, positions kept
    baseline = baseline.gather(1, torch.tensor(got.targets)[:, None])[:, 0].detach()
    torch.testing.assert_close(got.baseline_value, baseline, rtol=1e-5, atol=1e-5)
    change = got.value - got.baseline_value  # (T,)
    assert (change.abs() > 0.05).all()  # the check below means something for every row
    gap = got.integrated.sum(dim=1) - change
    torch.testing.assert_close(got.ig_gap, gap)
    assert (gap.abs() <= 0.01 * change.abs()).all(), (gap / change).tolist()


def test_the_logit_measure_explains_the_logit():
    model = tiny(True)
    src, tgt_in = sentence(4)
    got = source_attribution(model, src, tgt_in, steps=2, measure="logit")
    logits = model(torch.tensor([src]), torch.tensor([tgt_in])).logits[0]  # (T, V)
    torch.testing.assert_close(got.value, logits.gather(1, torch.tensor(got.targets)[:, None])[:, 0].detach())
    values, x, e = reference_scores(model, src, tgt_in, 1.0, measure="logit")
    (grad,) = torch.autograd.grad(values[2, got.targets[2]], x)
    torch.testing.assert_close(got.grad_x_input[2], (e * grad).sum(-1)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="measure"):
        source_attribution(model, src, tgt_in, measure="prob")


# --- patching --------------------------------------------------------------------------------------------------


def clean_and_corrupted() -> tuple[list[int], list[int], list[int]]:
    clean, tgt_in = sentence(5)
    corrupt = list(clean)
    corrupt[1], corrupt[4] = (corrupt[1] + 7) % (V - 3) + 3, (corrupt[4] + 11) % (V - 3) + 3
    return clean, corrupt, tgt_in


def logits_of(model, src, tgt_in) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([src]), torch.tensor([tgt_in])).logits  # (1, T, V)


@pytest.mark.parametrize("norm_first", [False, True])
def test_patching_everything_gives_the_clean_logits_and_nothing_the_corrupted(norm_first):
    model = tiny(norm_first)
    clean, corrupt, tgt_in = clean_and_corrupted()
    every_cross_head = {f"decoder.{i}.cross_attn.z": torch.tensor(True) for i in range(2)}
    patches = [{}, {"encoder.0.resid_pre": torch.tensor(True)}, every_cross_head, {"memory": torch.tensor(True)}]
    got = patched_logits(model, clean, corrupt, tgt_in, patches, chunk=3)  # (4, T, V)
    clean_logits, corrupt_logits = logits_of(model, clean, tgt_in)[0], logits_of(model, corrupt, tgt_in)[0]
    assert not torch.allclose(clean_logits, corrupt_logits, atol=1e-3)
    torch.testing.assert_close(got[0], corrupt_logits, rtol=0, atol=1e-5)
    for row in got[1:]:  # the decoder reads the source only through cross-attention
        torch.testing.assert_close(row, clean_logits, rtol=0, atol=1e-5)
    contrast = top_two(clean_logits[-1])
    metric = (contrast.of(got) - contrast.of(corrupt_logits)) / (
        contrast.of(clean_logits) - contrast.of(corrupt_logits)
    )
    torch.testing.assert_close(metric, torch.tensor([0.0, 1.0, 1.0, 1.0]), rtol=0, atol=1e-4)


def single_patched_value(model, corrupt, tgt_in, name, clean_activation, index, contrast) -> float:
    def patch(x, _name):
        x = x.clone()
        x[index] = clean_activation[index]
        return x

    with hooks(model, {name: patch}):
        return float(contrast.of(logits_of(model, corrupt, tgt_in))[0])


@pytest.mark.parametrize("norm_first", [False, True])
def test_the_batched_sweep_equals_single_patched_runs(norm_first):
    model = tiny(norm_first)
    clean, corrupt, tgt_in = clean_and_corrupted()
    contrast = Contrast(target=5, other=9, position=3)
    got = source_patching(model, clean, corrupt, tgt_in, contrast, chunk=5)  # 3·7 + 2·2 = 25 rows
    assert got.encoder.shape == (3, S) and got.cross_heads.shape == (2, 2)
    assert no_hooks_left(model)

    _, cache = run_with_cache(model, torch.tensor([clean]), torch.tensor([tgt_in]))
    clean_value = float(contrast.of(logits_of(model, clean, tgt_in))[0])
    corrupted_value = float(contrast.of(logits_of(model, corrupt, tgt_in))[0])
    assert got.clean_value == pytest.approx(clean_value, abs=1e-5)
    assert got.corrupted_value == pytest.approx(corrupted_value, abs=1e-5)

    def metric(value):
        return (value - corrupted_value) / (clean_value - corrupted_value)

    for i in range(3):
        name = f"encoder.{i}.resid_pre"
        for s in range(S):
            value = single_patched_value(model, corrupt, tgt_in, name, cache[name], (slice(None), s), contrast)
            assert float(got.encoder[i, s]) == pytest.approx(metric(value), abs=1e-4), (i, s)
    for i in range(2):
        name = f"decoder.{i}.cross_attn.z"
        for h in range(2):
            value = single_patched_value(model, corrupt, tgt_in, name, cache[name], (slice(None), h), contrast)
            assert float(got.cross_heads[i, h]) == pytest.approx(metric(value), abs=1e-4), (i, h)
    # positions where the sources agree restore nothing at layer 0 (nothing has mixed yet)
    torch.testing.assert_close(got.encoder[0, [0, 2, 3, 5, 6]], torch.zeros(5), rtol=0, atol=1e-4)
    assert got.encoder[0, [1, 4]].abs().sum() > 1e-3


def test_patching_refuses_sources_of_different_lengths_and_no_difference():
    model = tiny(False)
    clean, corrupt, tgt_in = clean_and_corrupted()
    with pytest.raises(UserError, match=r"7 tokens and the corrupted source 6"):
        source_patching(model, clean, corrupt[1:], tgt_in, Contrast(5, 9))
    with pytest.raises(UserError, match="nothing to restore"):
        source_patching(model, clean, clean, tgt_in, Contrast(5, 9))
    with pytest.raises(UserError, match="position"):
        source_patching(model, clean, corrupt, tgt_in, Contrast(5, 9, position=T))


# --- logit lens ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_lens_ends_with_the_models_softmax(norm_first):
    model = tiny(norm_first)
    src, tgt_in = sentence(6)
    lens = decoder_lens(model, src, tgt_in, target=tgt_in[1:] + [EOS], k=4)
    assert lens.rows == ["embed_tgt", "decoder.0.resid_post", "decoder.1.resid_post"]
    assert lens.top_ids.shape == lens.top_probs.shape == (3, T, 4) and lens.target_prob.shape == (3, T)

    probs = torch.softmax(logits_of(model, src, tgt_in)[0], dim=-1)  # (T, V)
    top = probs.topk(4, dim=-1)
    torch.testing.assert_close(lens.top_probs[-1], top.values)
    assert torch.equal(lens.top_ids[-1], top.indices)
    torch.testing.assert_close(lens.target_prob[-1], probs[torch.arange(T), torch.tensor(tgt_in[1:] + [EOS])])

    _, cache = run_with_cache(model, torch.tensor([src]), torch.tensor([tgt_in]))
    stream = cache["decoder.0.resid_post"][0]  # (T, C)
    if norm_first:  # pre-LN: the stream through the final LayerNorm, by hand
        stream = F.layer_norm(stream, (16,), model.ln_dec.weight, model.ln_dec.bias)
    middle = torch.softmax(stream @ model.embed.weight.T, dim=-1)  # post-LN: projected directly
    torch.testing.assert_close(lens.top_probs[1], middle.topk(4, dim=-1).values)

    one = decoder_lens(model, src, tgt_in, target=7, k=1)
    assert one.top_ids.shape == (3, T, 1)
    torch.testing.assert_close(one.target_prob[-1], probs[:, 7])
    assert decoder_lens(model, src, tgt_in).target_prob is None
    with pytest.raises(UserError, match="k must be"):
        decoder_lens(model, src, tgt_in, k=0)
