"""The encoder–decoder Transformer: masks, padding, loss, embedding scale, against independent references."""

import math

import pytest
import torch
import torch.nn.functional as F

from kqv.config import ConfigError, TransformerConfig
from kqv.models.transformer import Transformer, smoothed_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAD, BOS, EOS = 0, 1, 2


def tiny(**kw) -> TransformerConfig:
    values = dict(vocab_size=40, max_len=32, n_layer_enc=2, n_layer_dec=2, n_head=4, n_embd=32, d_ff=64, dropout=0.0)
    return TransformerConfig(**{**values, **kw})


def batch(seed=0, B=3, S=7, T=6, V=40):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (B, S), generator=g)
    src[1, 4:] = PAD  # a shorter sentence, right-padded
    tgt = torch.randint(3, V, (B, T + 1), generator=g)
    tgt_in, tgt_out = tgt[:, :-1].clone(), tgt[:, 1:].clone()
    tgt_in[:, 0] = BOS
    tgt_in[2, 4:], tgt_out[2, 3:] = PAD, PAD
    return src, tgt_in, tgt_out


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_torch_nn_transformer_with_the_same_weights(norm_first):
    """Independent reference: torch.nn.Transformer with our weights copied in (post-LN and pre-LN)."""
    torch.manual_seed(0)
    c = tiny(norm_first=norm_first)
    ours = Transformer(c).double().eval()
    ref = torch.nn.Transformer(
        d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64, dropout=0.0,
        batch_first=True, norm_first=norm_first,
    ).double().eval()  # fmt: skip

    def copy_mha(dst, src_mha):
        dst.in_proj_weight.data.copy_(src_mha.in_proj.weight)
        dst.in_proj_bias.data.copy_(src_mha.in_proj.bias)
        dst.out_proj.weight.data.copy_(src_mha.proj.weight)
        dst.out_proj.bias.data.copy_(src_mha.proj.bias)

    def copy_ln(dst, src_ln):
        dst.weight.data.copy_(src_ln.weight)
        dst.bias.data.copy_(src_ln.bias)

    def copy_ff(dst_layer, ff):
        dst_layer.linear1.weight.data.copy_(ff.fc.weight)
        dst_layer.linear1.bias.data.copy_(ff.fc.bias)
        dst_layer.linear2.weight.data.copy_(ff.proj.weight)
        dst_layer.linear2.bias.data.copy_(ff.proj.bias)

    for dst, src_layer in zip(ref.encoder.layers, ours.encoder, strict=True):
        copy_mha(dst.self_attn, src_layer.self_attn)
        copy_ln(dst.norm1, src_layer.ln_1)
        copy_ln(dst.norm2, src_layer.ln_2)
        copy_ff(dst, src_layer.ff)
    for dst, src_layer in zip(ref.decoder.layers, ours.decoder, strict=True):
        copy_mha(dst.self_attn, src_layer.self_attn)
        copy_mha(dst.multihead_attn, src_layer.cross_attn)
        copy_ln(dst.norm1, src_layer.ln_1)
        copy_ln(dst.norm2, src_layer.ln_2)
        copy_ln(dst.norm3, src_layer.ln_3)
        copy_ff(dst, src_layer.ff)
    if norm_first:
        copy_ln(ref.encoder.norm, ours.ln_enc)
        copy_ln(ref.decoder.norm, ours.ln_dec)
    else:  # torch ends even post-LN stacks in one more LayerNorm; the paper (and kqv) does not
        ref.encoder.norm = ref.decoder.norm = None

    src, tgt_in, _ = batch()
    causal = torch.nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], dtype=torch.float64)
    expected = ref(
        ours._embed(src), ours._embed(tgt_in), tgt_mask=causal,
        src_key_padding_mask=src == PAD, memory_key_padding_mask=src == PAD,
    )  # fmt: skip
    captured = {}
    ours.ln_dec.register_forward_hook(lambda module, args, output: captured.update(h=output))
    logits = ours(src, tgt_in).logits
    torch.testing.assert_close(captured["h"], expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(logits, expected @ ours.embed.weight.T, atol=1e-10, rtol=1e-10)


def test_logits_are_the_tied_embedding_applied_to_the_decoder_output():
    torch.manual_seed(0)
    model = Transformer(tiny()).double().eval()
    src, tgt_in, _ = batch()
    captured = {}
    handle = model.decoder_out.register_forward_hook(lambda module, args, output: captured.update(h=output))
    try:
        logits = model(src, tgt_in).logits
    finally:
        handle.remove()
    torch.testing.assert_close(logits, captured["h"] @ model.embed.weight.T, atol=1e-12, rtol=0)  # (B, T, V)
    # one matrix for input and output: no other parameter has a vocabulary-sized axis (V = 40 is no other width)
    assert [n for n, p in model.named_parameters() if 40 in p.shape] == ["embed.weight"]


def test_embeddings_are_scaled_by_sqrt_d_model_on_the_input_side_only():
    torch.manual_seed(0)
    model = Transformer(tiny(pos_encoding="none")).double().eval()
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(model._embed(ids), model.embed.weight[ids] * math.sqrt(32))
    # init: E ~ N(0, 1/d_model), so the scaled input rows have about unit variance
    big = Transformer(tiny(vocab_size=4000, pos_encoding="none"))
    assert abs(float((big.embed.weight.detach() * math.sqrt(32)).std()) - 1.0) < 0.05


def test_later_target_tokens_do_not_change_earlier_logits():
    torch.manual_seed(0)
    model = Transformer(tiny()).double().eval()
    src, tgt_in, _ = batch()
    before = model(src, tgt_in).logits
    changed = tgt_in.clone()
    changed[:, 4] = 7
    after = model(src, changed).logits
    torch.testing.assert_close(after[:, :4], before[:, :4], atol=0, rtol=0)
    assert not torch.allclose(after[:, 4:], before[:, 4:])


def test_source_padding_changes_nothing():
    """A sentence alone, padded in a batch, or padded further: the same logits, and so are the other rows'."""
    torch.manual_seed(0)
    model = Transformer(tiny()).double().eval()
    src, tgt_in, _ = batch()
    padded = model(src, tgt_in).logits  # (B, T, V)
    alone = model(src[1:2, :4], tgt_in[1:2]).logits[0]
    torch.testing.assert_close(padded[1], alone, atol=1e-10, rtol=1e-10)
    longer = torch.cat([src, torch.full((3, 5), PAD)], dim=1)  # (B, S + 5): a longer padded tail on every row
    torch.testing.assert_close(model(longer, tgt_in).logits, padded, atol=1e-10, rtol=1e-10)


def replacing(hook_point, where: torch.Tensor, garbage: torch.Tensor):
    """A forward hook that puts `garbage` into hook_point's output (B, S, C) at `where` (B, S)."""
    return hook_point.register_forward_hook(lambda module, args, output: torch.where(where[..., None], garbage, output))


@pytest.mark.parametrize("norm_first", [False, True])
def test_what_sits_in_a_padded_source_slot_does_not_matter(norm_first):
    """Padding is the slots whose id is pad_id: their vectors, entering the encoder or leaving it, are never read."""
    torch.manual_seed(0)
    model = Transformer(tiny(norm_first=norm_first)).double().eval()
    src, tgt_in, _ = batch()
    src[0, 5:] = PAD  # two rows with a padded tail, one without
    pad = src == PAD  # (B, S)
    before = model(src, tgt_in).logits  # (B, T, V)
    garbage = 100 * torch.randn(*src.shape, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for hook_point in (model.embed_src, model.memory):  # encoder self-attention, then cross-attention
        handle = replacing(hook_point, pad, garbage)
        try:
            after = model(src, tgt_in).logits
        finally:
            handle.remove()
        torch.testing.assert_close(after, before, atol=1e-10, rtol=1e-10)
        handle = replacing(hook_point, ~pad, garbage)  # the same garbage in the real slots does change the logits
        try:
            assert not torch.allclose(model(src, tgt_in).logits, before)
        finally:
            handle.remove()
    real = src.clone()
    real[1, 5] = 9  # a real token in a padded slot is no longer padding: row 1 changes, the others do not
    after = model(real, tgt_in).logits
    assert not torch.allclose(after[1], before[1])
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]], atol=1e-10, rtol=1e-10)


def test_loss_equals_torch_cross_entropy_with_label_smoothing_and_ignored_padding():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64)
    target = torch.randint(3, 11, (3, 5), generator=g)
    target[0, 3:] = PAD
    target[2, 1:] = PAD
    loss, nll, n = smoothed_loss(logits, target, PAD, 0.1)
    flat = logits.reshape(-1, 11), target.reshape(-1)
    torch.testing.assert_close(loss.double(), F.cross_entropy(*flat, ignore_index=PAD, label_smoothing=0.1))
    torch.testing.assert_close(nll.double(), F.cross_entropy(*flat, ignore_index=PAD))
    assert n == int((target != PAD).sum()) == 9
    garbage = logits.clone()  # logits at padded targets may be anything: neither the NLL nor the smoothing reads them
    garbage[target == PAD] = 1e3 * torch.randn(int((target == PAD).sum()), 11, generator=g, dtype=torch.float64)
    garbage_loss, garbage_nll, _ = smoothed_loss(garbage, target, PAD, 0.1)
    torch.testing.assert_close(garbage_loss, loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(garbage_nll, nll, atol=1e-12, rtol=0)


def test_padding_never_reaches_the_loss_and_eval_reports_plain_nll():
    torch.manual_seed(0)
    model = Transformer(tiny(label_smoothing=0.1)).double()
    src, tgt_in, tgt_out = batch()
    model.eval()
    out = model(src, tgt_in, tgt_out)
    n = int((tgt_out != PAD).sum())
    assert out.n_tokens == n == 15
    assert torch.equal(out.loss, out.nll)  # eval: no smoothing; perplexity = exp(nll)
    # reference: each sentence alone, cut to its real length; the batch's NLL is their token-weighted mean
    total = 0.0
    for i in range(3):
        s_len, t_len = int((src[i] != PAD).sum()), int((tgt_out[i] != PAD).sum())
        alone = model(src[i : i + 1, :s_len], tgt_in[i : i + 1, :t_len], tgt_out[i : i + 1, :t_len])
        total += alone.nll.item() * t_len
    assert out.nll.item() == pytest.approx(total / n, rel=1e-12)
    tgt_in_poked = tgt_in.clone()
    tgt_in_poked[2, 3:] = 9  # inputs whose predictions are padded targets: only those (ignored) logits change
    poked = model(src, tgt_in_poked, tgt_out)
    assert not torch.allclose(poked.logits[2, 3:], out.logits[2, 3:])
    torch.testing.assert_close(poked.logits[2, :3], out.logits[2, :3], atol=1e-12, rtol=0)
    torch.testing.assert_close(poked.nll, out.nll, atol=1e-12, rtol=0)
    counted = tgt_out.clone()
    counted[2, 3] = 9  # a real label where padding was is counted: padding is what carries pad_id
    assert model(src, tgt_in, counted).n_tokens == n + 1
    model.train()  # dropout is 0: the only difference in training is the smoothing
    smoothed = model(src, tgt_in, tgt_out)
    flat = smoothed.logits.reshape(-1, 40), tgt_out.reshape(-1)
    torch.testing.assert_close(smoothed.loss, F.cross_entropy(*flat, ignore_index=PAD, label_smoothing=0.1))
    torch.testing.assert_close(smoothed.nll, out.nll)


def test_attention_patterns_have_the_documented_shapes_and_rows_sum_to_one():
    torch.manual_seed(0)
    model = Transformer(tiny()).double().eval()
    src, tgt_in, _ = batch()
    with torch.no_grad():
        out = model(src, tgt_in, need_pattern=True)
    B, S, T = 3, 7, 6
    for name, shape in {"encoder": (B, 4, S, S), "decoder": (B, 4, T, T), "cross": (B, 4, T, S)}.items():
        assert len(out.patterns[name]) == 2
        for p in out.patterns[name]:
            assert p.shape == shape
            torch.testing.assert_close(p.sum(-1), torch.ones(shape[:-1], dtype=p.dtype))
    assert float(out.patterns["cross"][0][1, :, :, 4:].abs().max()) == 0.0  # padded source: no weight
    assert float(out.patterns["decoder"][0].triu(1).abs().max()) == 0.0  # no look-ahead


def test_incremental_decoding_equals_the_full_forward_pass():
    torch.manual_seed(0)
    model = Transformer(tiny()).double().eval()
    src, tgt_in, _ = batch()
    full = model(src, tgt_in).logits  # (B, T, V)
    state = model.start_decoding(src, max_len=tgt_in.shape[1])
    steps = [model.step(tgt_in[:, t], state) for t in range(tgt_in.shape[1])]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-10, rtol=1e-10)


def test_too_long_input_and_bad_configs_are_clear_errors():
    model = Transformer(tiny(max_len=8)).eval()
    with pytest.raises(ValueError, match="longer than the model's max_len 8"):
        model(torch.ones(1, 9, dtype=torch.long) * 5, torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="n_embd=30 is not divisible by n_head=4"):
        tiny(n_embd=30)
    with pytest.raises(ConfigError, match="pos_encoding 'rope'"):
        tiny(pos_encoding="rope")
    with pytest.raises(ConfigError, match="distinct"):
        tiny(bos_id=0)
