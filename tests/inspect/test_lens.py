"""The logit lens against Hugging Face's GPT-2: a kqv GPT in the GPT-2 layout is exported with kqv's own
converter, loaded into `transformers.GPT2LMHeadModel`, and HF's ln_f and lm_head applied to its own
hidden states must give the lens's probabilities (≤ 1e-5, float32). The last row must be the model's
own output distribution for every positional encoding; `first_row` is checked on hand-made rows.
"""

import pytest
import torch

from kqv.errors import UserError
from kqv.inspect.cache import hook_points
from kqv.inspect.lens import Lens, logit_lens
from kqv.models.gpt import GPT
from kqv.models.hf import hf_config_from_gpt, to_hf_tensors
from tests.inspect import small
from tests.inspect.small import POSITIONAL, random_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

V, T = 50, 9


def widened_gpt(seed: int = 0, std: float = 0.15, **kw) -> GPT:
    return small.widened_gpt(seed, std, V, **{"n_layer": 3, **kw})  # three layers: a middle row to check


def prompt(seed: int = 1) -> list[int]:
    return random_prompt(T, seed, V)


def test_lens_matches_transformers_gpt2_hidden_states_through_its_own_ln_f_and_lm_head():
    transformers = pytest.importorskip("transformers")  # the other tests run without it
    GPT2Config, GPT2LMHeadModel = transformers.GPT2Config, transformers.GPT2LMHeadModel
    model = widened_gpt(bias=True, activation="gelu_tanh", pos_encoding="learned")
    hf = GPT2LMHeadModel(GPT2Config(**hf_config_from_gpt(model.config, None))).eval()
    loaded = hf.load_state_dict(to_hf_tensors(model), strict=False)
    assert loaded.missing_keys == ["lm_head.weight"] and not loaded.unexpected_keys  # the tied head
    assert hf.lm_head.weight is hf.transformer.wte.weight

    ids, target = prompt(), 7
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
        L = model.config.n_layer
        assert len(out.hidden_states) == L + 1  # embeddings, blocks 0 … L−2, then ln_f(block L−1)
        rows = [hf.lm_head(hf.transformer.ln_f(h[0])) for h in out.hidden_states[:L]] + [out.logits[0]]
        reference = torch.softmax(torch.stack(rows), dim=-1)  # (L+1, T, V)

    lens = logit_lens(model, ids, target=target, k=V)  # k = V: every token's probability
    assert lens.rows == ["embed", "block 0", "block 1", "block 2"]
    assert lens.top_ids.shape == lens.top_probs.shape == (L + 1, T, V)
    torch.testing.assert_close(lens.top_probs, reference.gather(-1, lens.top_ids), atol=1e-5, rtol=0)
    assert torch.equal(lens.top_ids.sort(dim=-1).values, torch.arange(V).expand(L + 1, T, V))  # each token once
    assert (lens.top_probs[..., :-1] >= lens.top_probs[..., 1:]).all()  # sorted, most likely first
    torch.testing.assert_close(lens.target_prob, reference[..., target], atol=1e-5, rtol=0)
    rank = (reference > reference[..., target, None]).sum(dim=-1)  # tokens more likely than the target
    assert torch.equal(lens.target_rank, rank)
    assert (lens.target_rank > 0).any() and (lens.top_probs[..., 0] < 0.99).all()  # not a degenerate model


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
@pytest.mark.parametrize("bias", [False, True])
def test_last_row_is_the_models_own_distribution(pos_encoding, bias):
    model = widened_gpt(pos_encoding=pos_encoding, bias=bias).double()
    ids = prompt(2)
    with torch.no_grad():
        own = torch.softmax(model(torch.tensor([ids])).logits[0], dim=-1)  # (T, V)
    lens = logit_lens(model, ids, target=3, k=4)
    assert lens.top_probs.dtype == torch.float64  # the model's dtype
    top = own.topk(4, dim=-1)
    assert torch.equal(lens.top_ids[-1], top.indices)
    torch.testing.assert_close(lens.top_probs[-1], top.values, atol=1e-12, rtol=0)
    torch.testing.assert_close(lens.target_prob[-1], own[:, 3], atol=1e-12, rtol=0)
    first = lens.top_probs[0] - lens.top_probs[-1]
    assert first.abs().max() > 1e-3  # the embedding row is a different distribution


def test_the_embedding_row_includes_the_positions():
    model = widened_gpt(pos_encoding="learned").double()
    ids = [5] * T  # one token repeated: only the positions tell the rows apart
    lens = logit_lens(model, ids, k=V)
    assert (lens.top_probs[0, 0] - lens.top_probs[0, 1]).abs().max() > 1e-3
    x = model.tok_emb.weight[5] + model.positional.embedding.weight[:T]  # (T, C), by hand
    reference = torch.softmax(model.ln_f(x) @ model.tok_emb.weight.T, dim=-1).detach()  # (T, V)
    torch.testing.assert_close(lens.top_probs[0], reference.gather(-1, lens.top_ids[0]), atol=1e-12, rtol=0)
    assert lens.target is None and lens.target_prob is None and lens.target_rank is None


def hand_lens(top1: list[int], target: int | None) -> Lens:
    """A lens of len(top1) rows and 2 positions whose top-1 at position 1 is `top1`, row by row."""
    ids = torch.tensor([[[0, 1], [t, 0]] for t in top1])  # (rows, T=2, k=2)
    return Lens([f"r{i}" for i in range(len(top1))], ids, torch.full(ids.shape, 0.5), target)


@pytest.mark.parametrize(
    "top1, target, expected",
    [
        ([4, 4, 4, 4], 4, 0),  # top-1 from the embedding on
        ([4, 9, 4, 4], 4, 2),  # top-1 at row 0, lost at row 1: it counts from row 2
        ([9, 9, 9, 4], 4, 3),  # only the last row
        ([4, 4, 4, 9], 4, None),  # lost at the end: never
        ([9, 9, 9, 9], 4, None),
        ([9, 4, 3, 3], None, 2),  # no target: the last row's own top-1 (3)
    ],
)
def test_first_row_is_where_the_target_becomes_top1_and_stays(top1, target, expected):
    lens = hand_lens(top1, target)
    assert lens.first_row(position=1) == expected
    assert lens.first_row(position=-1) == expected
    assert lens.first_row(position=0) == (0 if target in (None, 0) else None)  # position 0's top-1 is always 0


def test_first_row_on_a_real_lens_agrees_with_the_ranks():
    model = widened_gpt(seed=3).double()
    lens = logit_lens(model, prompt(4), target=None, k=1)
    final = int(lens.top_ids[-1, -1, 0])
    ranked = logit_lens(model, prompt(4), target=final, k=1)
    first = ranked.first_row()
    assert first == lens.first_row() and first is not None
    assert (ranked.target_rank[first:, -1] == 0).all()
    assert first == 0 or ranked.target_rank[first - 1, -1] > 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: logit_lens(m, [1, 2], target=V), r"target token id 50 is outside the vocabulary \(0 … 49\)"),
        (lambda m: logit_lens(m, [1, 2], k=0), r"k=0 is out of range: pick 1 … 50"),
        (lambda m: logit_lens(m, [1, 2], k=V + 1), r"k=51 is out of range"),
        (lambda m: logit_lens(m, []), r"the prompt is empty"),
        (lambda m: logit_lens(m, [1] * 17), r"the prompt has 17 tokens; the model reads at most block_size=16"),
        (lambda m: logit_lens(m, [1, 60]), r"the prompt holds token id 60, outside the vocabulary \(ids 0 … 49\)"),
        (lambda m: logit_lens(m, [1, 2]).first_row(position=2), r"position 2 is out of range: the prompt has 2"),
    ],
)
def test_user_errors_name_the_problem(call, message):
    with pytest.raises(UserError, match=message):
        call(widened_gpt())


def test_mode_is_restored_and_no_hook_is_left():
    model = widened_gpt().train()
    lens = logit_lens(model, torch.tensor(prompt()), target=1)  # a LongTensor works like a list
    assert model.training
    assert not any(point.active for point in hook_points(model).values())
    assert lens.top_ids.shape == (4, T, 5)
