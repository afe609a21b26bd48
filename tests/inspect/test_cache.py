"""The activation cache: hook points at every activation, run_with_cache, and the table in docs/activations.md.

The cached pattern is checked against softmax(q·kᵀ/√hs + mask) recomputed from the cached q and k;
a cached run must not change the output; and the fused kernel must still run when no hook asks
for scores or patterns.
"""

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kqv.nn.attention
from kqv.config import GPTConfig, TransformerConfig
from kqv.inspect.cache import ActivationCache, hook_points, hooks, run_with_cache, select_names
from kqv.models.gpt import GPT
from kqv.models.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "activations.md"
PAD, BOS, EOS = 0, 1, 2


def tiny_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    values = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return GPT(GPTConfig(**{**values, **kw})).eval()


def tiny_transformer(**kw) -> Transformer:
    torch.manual_seed(0)
    values = dict(vocab_size=40, max_len=32, n_layer_enc=2, n_layer_dec=2, n_head=2, n_embd=16, d_ff=24, dropout=0.0)
    return Transformer(TransformerConfig(**{**values, **kw})).eval()


def gpt_input(B=2, T=10, V=50) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))


def translation_input(B=3, S=7, T=6, V=40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    src = torch.randint(3, V, (B, S), generator=g)
    src[1, 4:] = PAD  # a shorter sentence, right-padded: keys 4… are padding
    tgt_in = torch.randint(3, V, (B, T), generator=g)
    tgt_in[:, 0] = BOS
    return src, tgt_in


def reference_pattern(q, k, allowed) -> torch.Tensor:
    """softmax(q·kᵀ/√hs) with -inf where `allowed` is False, computed here from scratch."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)


def test_gpt_pattern_is_the_softmax_of_the_cached_q_and_k_under_the_causal_mask():
    model = tiny_gpt()
    _, cache = run_with_cache(model, gpt_input())
    T = 10
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(2):
        q, k = cache[f"blocks.{i}.attn.q"], cache[f"blocks.{i}.attn.k"]
        pattern, scores = cache[f"blocks.{i}.attn.pattern"], cache[f"blocks.{i}.attn.scores"]
        torch.testing.assert_close(pattern, reference_pattern(q, k, causal), atol=1e-6, rtol=0)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 2, T), atol=1e-6, rtol=0)
        assert (pattern[..., ~causal] == 0).all()  # the future triangle is exactly 0
        assert torch.isneginf(scores[..., ~causal]).all() and torch.isfinite(scores[..., causal]).all()
        # z is pattern·V, and attn.out its merged, projected form
        torch.testing.assert_close(cache[f"blocks.{i}.attn.z"], pattern @ cache[f"blocks.{i}.attn.v"])
        z = cache[f"blocks.{i}.attn.z"].transpose(1, 2).reshape(2, T, 16)
        torch.testing.assert_close(cache[f"blocks.{i}.attn.out"], model.blocks[i].attn.proj(z))


def test_the_residual_stream_adds_up():
    _, cache = run_with_cache(tiny_gpt(), gpt_input())
    for i in range(2):
        b = f"blocks.{i}."
        torch.testing.assert_close(cache[b + "resid_mid"], cache[b + "resid_pre"] + cache[b + "attn.out"])
        torch.testing.assert_close(cache[b + "resid_post"], cache[b + "resid_mid"] + cache[b + "mlp.out"])
    torch.testing.assert_close(cache["blocks.1.resid_pre"], cache["blocks.0.resid_post"])
    torch.testing.assert_close(cache["blocks.0.resid_pre"], cache["pos_embed"])


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_translation_patterns_with_padding_are_the_softmax_of_the_cached_q_and_k(norm_first):
    model = tiny_transformer(norm_first=norm_first)
    src, tgt_in = translation_input()
    _, cache = run_with_cache(model, src, tgt_in)
    keep = (src != PAD)[:, None, None, :]  # (B, 1, 1, S)
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    for i in range(2):
        checks = [
            ("encoder", "self_attn", keep.expand(-1, 1, 7, -1)),  # each source token sees every unpadded one
            ("decoder", "self_attn", causal.expand(3, 1, 6, 6)),
            ("decoder", "cross_attn", keep.expand(-1, 1, 6, -1)),  # each target token sees every unpadded source
        ]
        for stack, attn, allowed in checks:
            a = f"{stack}.{i}.{attn}."
            pattern = cache[a + "pattern"]
            torch.testing.assert_close(pattern, reference_pattern(cache[a + "q"], cache[a + "k"], allowed), atol=1e-6,
                                       rtol=0)  # fmt: skip
            torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]), atol=1e-6, rtol=0)
            assert (pattern.masked_select(~allowed) == 0).all()  # padding and the future get exactly 0
    # cross-attention's keys are the memory's, projected with W_K of that layer
    k, _ = model.decoder[0].cross_attn.project_kv(cache["memory"])
    torch.testing.assert_close(cache["decoder.0.cross_attn.k"], k)


def test_a_cached_run_leaves_the_output_unchanged():
    model = tiny_gpt()
    idx = gpt_input()
    with torch.no_grad():
        plain = model(idx).logits
    out, cache = run_with_cache(model, idx)  # every hook point: the written-out attention path
    torch.testing.assert_close(out.logits, plain, atol=1e-5, rtol=1e-5)
    assert torch.equal(cache["logits"], out.logits)
    translation = tiny_transformer()
    src, tgt_in = translation_input()
    with torch.no_grad():
        plain = translation(src, tgt_in).logits
    out, cache = run_with_cache(translation, src, tgt_in)
    # the written-out path adds in another order than the fused kernel: float32 rounding, machine-dependent
    torch.testing.assert_close(out.logits, plain, atol=1e-5, rtol=1e-5)
    assert torch.equal(cache["logits"], out.logits)


def spy(monkeypatch) -> dict[str, int]:
    """Count calls of the written-out attention and of the fused kernel."""
    calls = {"written_out": 0, "fused": 0}
    written_out, fused = kqv.nn.attention.attention, F.scaled_dot_product_attention

    def count_written_out(*args, **kw):
        calls["written_out"] += 1
        return written_out(*args, **kw)

    def count_fused(*args, **kw):
        calls["fused"] += 1
        return fused(*args, **kw)

    monkeypatch.setattr(kqv.nn.attention, "attention", count_written_out)
    monkeypatch.setattr(kqv.nn.attention.F, "scaled_dot_product_attention", count_fused)
    return calls


def test_the_fused_kernel_runs_unless_a_hook_asks_for_scores_or_patterns(monkeypatch):
    model, idx = tiny_gpt(), gpt_input()
    calls = spy(monkeypatch)
    run_with_cache(model, idx, names=["blocks.*.resid_post", "blocks.*.attn.q", "blocks.*.attn.z"])
    assert calls == {"written_out": 0, "fused": 2}
    calls.update(written_out=0, fused=0)
    run_with_cache(model, idx, names="blocks.1.attn.pattern")  # only layer 1 leaves the fused kernel
    assert calls == {"written_out": 1, "fused": 1}
    calls.update(written_out=0, fused=0)
    run_with_cache(model, idx, names="blocks.0.attn.scores")
    assert calls == {"written_out": 1, "fused": 1}
    calls.update(written_out=0, fused=0)
    with torch.no_grad():
        model(idx)  # after the runs no hook is left, so the plain forward is all fused again
    assert calls == {"written_out": 0, "fused": 2}


def test_hooks_are_removed_and_the_mode_restored_when_the_forward_raises():
    model = tiny_gpt(dropout=0.1).train()

    def boom(module, inputs, output):
        raise RuntimeError("boom")

    handle = model.blocks[1].mlp.fc.register_forward_hook(boom)  # fails half-way through the pass
    with pytest.raises(RuntimeError, match="boom"):
        run_with_cache(model, gpt_input())
    handle.remove()
    assert not any(p.active for p in hook_points(model).values())
    assert model.training and model.blocks[0].training
    with pytest.raises(ZeroDivisionError), hooks(model, {"blocks.0.attn.q": lambda x, name: 1 / 0}):
        model(gpt_input())
    assert not any(p.active for p in hook_points(model).values())


def test_run_with_cache_runs_in_eval_mode_without_gradients_and_restores_training():
    model = tiny_gpt(dropout=0.5).train()
    idx = gpt_input()
    out1, cache = run_with_cache(model, idx, names="logits")
    out2, _ = run_with_cache(model, idx, names="logits")
    assert torch.equal(out1.logits, out2.logits)  # no dropout: eval mode
    assert not cache["logits"].requires_grad and model.training


def test_names_select_by_glob_list_and_function_and_typos_are_errors():
    model = tiny_gpt()
    assert select_names(model, "blocks.*.attn.pattern") == ["blocks.0.attn.pattern", "blocks.1.attn.pattern"]
    assert select_names(model, ["logits", "embed"]) == ["embed", "logits"]  # in module order
    assert select_names(model, lambda n: n.endswith("mlp.hidden")) == ["blocks.0.mlp.hidden", "blocks.1.mlp.hidden"]
    assert len(select_names(model)) == len(hook_points(model)) == 4 + 2 * 12
    _, cache = run_with_cache(model, gpt_input(), names="blocks.0.*")
    assert sorted(cache) == sorted(n for n in select_names(model) if n.startswith("blocks.0."))
    assert cache.names()[:4] == ["blocks.0.resid_pre", "blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v"]
    with pytest.raises(ValueError, match="did you mean blocks.0.attn.pattern"):
        select_names(model, "blocks.0.attn.patern")
    with pytest.raises(ValueError, match="no hook point"):
        run_with_cache(model, gpt_input(), names=["logits", "block.*.attn.pattern"])
    with pytest.raises(KeyError, match="did you mean"):
        cache["blocks.0.attn.patern"]


def test_stack_gives_one_axis_per_layer():
    _, cache = run_with_cache(tiny_gpt(), gpt_input())
    stacked = cache.stack("attn.pattern")
    assert stacked.shape == (2, 2, 2, 10, 10)
    assert torch.equal(stacked[1], cache["blocks.1.attn.pattern"])
    assert torch.equal(cache.stack("blocks.*.resid_post"), torch.stack([cache["blocks.0.resid_post"],
                                                                         cache["blocks.1.resid_post"]]))  # fmt: skip
    src, tgt_in = translation_input()
    _, cache = run_with_cache(tiny_transformer(), src, tgt_in)
    assert cache.stack("cross_attn.pattern").shape == (2, 3, 2, 6, 7)
    with pytest.raises(ValueError, match="encoder.{i}.self_attn.pattern and decoder"):
        cache.stack("self_attn.pattern")
    assert cache.stack("encoder.*.self_attn.pattern").shape == (2, 3, 2, 7, 7)


def test_a_hook_can_replace_an_activation_for_one_pass():
    model, idx = tiny_gpt(), gpt_input()
    with torch.no_grad():
        plain = model(idx).logits
        with hooks(model, {"blocks.0.attn.out": lambda x, name: torch.zeros_like(x)}):
            ablated = model(idx).logits
        again = model(idx).logits
    assert not torch.allclose(ablated, plain) and torch.equal(again, plain)


def test_kv_cached_decoding_with_a_pattern_hook_sees_every_cached_key():
    model, idx = tiny_gpt(), gpt_input(B=1, T=6)
    with torch.no_grad():
        full = model(idx).logits
    kv = model.new_cache(1)
    with torch.no_grad():
        model(idx[:, :5], cache=kv)
    out, cache = run_with_cache(model, idx[:, 5:], names=["blocks.*.attn.pattern", "blocks.*.attn.k"], cache=kv)
    assert cache["blocks.0.attn.pattern"].shape == (1, 2, 1, 6) and cache["blocks.0.attn.k"].shape == (1, 2, 6, 8)
    torch.testing.assert_close(out.logits[:, -1], full[:, -1], atol=1e-5, rtol=0)


def documented(section: str) -> list[tuple[str, str]]:
    """(name, shape) rows of the table under the `## section` heading of docs/activations.md."""
    text = DOCS.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}")[1].split("\n## ")[0]
    return re.findall(r"^\| `([^`]+)` \| (\([^)]*\)) \|", body, flags=re.M)


def check_against_docs(cache: ActivationCache, rows, n_layers: dict[str, int], dims: dict[str, int]) -> None:
    expected = {}
    for name, shape in rows:
        stack = name.split(".")[0]
        for i in range(n_layers.get(stack, 1)):
            expected[name.replace("{i}", str(i))] = tuple(dims[s.strip()] for s in shape.strip("()").split(","))
    assert cache.shapes() == expected  # the same names (no more, no fewer) and the documented shapes


def test_every_documented_gpt_name_has_the_documented_shape():
    rows = documented("GPT")
    assert len(rows) == 16
    _, cache = run_with_cache(tiny_gpt(), gpt_input())
    dims = dict(B=2, T=10, Tk=10, C=16, nh=2, hs=8, H=64, V=50)
    check_against_docs(cache, rows, {"blocks": 2}, dims)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_every_documented_translation_name_has_the_documented_shape(norm_first):
    rows = documented("Encoder–decoder Transformer")
    assert len(rows) == 37
    src, tgt_in = translation_input()
    _, cache = run_with_cache(tiny_transformer(norm_first=norm_first, n_layer_dec=3), src, tgt_in)
    dims = dict(B=3, S=7, T=6, Tk=6, C=16, nh=2, hs=8, F=24, V=40)
    check_against_docs(cache, rows, {"encoder": 2, "decoder": 3}, dims)
