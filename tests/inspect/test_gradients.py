"""Gradient × input and integrated gradients, checked without kqv's hook machinery.

The reference is a copy of the model whose output head is untied from the token embedding: then the
gradient of the contrast with respect to the embedding *matrix* is, row by row, the gradient with
respect to each token's embedding (the test's token ids are distinct), by plain torch autograd.
Finite differences of f along e[t] check gradient × input, completeness checks integrated gradients.
"""

import copy

import pytest
import torch
from torch import nn

import kqv.inspect.gradients as gradients
from kqv.config import GPTConfig
from kqv.errors import UserError
from kqv.inspect.cache import hook_points
from kqv.inspect.contrast import Contrast
from kqv.inspect.gradients import Attribution, gradient_x_input, integrated_gradients
from kqv.models.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

POSITIONAL = ["learned", "rope", "alibi", "none", "sinusoidal"]
IDS = [4, 19, 7, 0, 23, 11, 2, 15]  # distinct, so each row of the embedding matrix is one position
CONTRAST = Contrast(target=3, other=9)


def tiny_gpt(pos_encoding="learned", dtype=torch.float64, scale=8.0) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=25, block_size=16, n_layer=2, n_head=2, n_embd=16, pos_encoding=pos_encoding)
    model = GPT(config).to(dtype).eval()
    with torch.no_grad():  # weights larger than GPT-2's init: a clearly non-linear f
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return model


def untied(model: GPT) -> GPT:
    """A copy whose lm_head has its own weight: the embedding matrix then only embeds."""
    twin = copy.deepcopy(model)
    twin.lm_head.weight = nn.Parameter(model.tok_emb.weight.detach().clone())
    return twin


def f_of(model: GPT, ids) -> torch.Tensor:
    return CONTRAST.of(model(torch.as_tensor([ids])).logits)[0]


def value_of(model: GPT, ids) -> float:
    with torch.no_grad():
        return float(f_of(model, ids))


def embedding_gradient(model: GPT, ids) -> torch.Tensor:
    """∂f/∂e (T, C) by autograd on the untied copy's embedding matrix: row ids[t] is position t's."""
    twin = untied(model)
    (grad,) = torch.autograd.grad(f_of(twin, ids), twin.tok_emb.weight)  # (V, C)
    return grad[torch.as_tensor(ids)]  # (T, C)


def f_with_rows(model: GPT, ids, rows: torch.Tensor) -> float:
    """f when the token embeddings of `ids` are `rows` (T, C): the untied copy's matrix, edited; positions stay."""
    twin = untied(model)
    with torch.no_grad():
        twin.tok_emb.weight[torch.as_tensor(ids)] = rows
        return float(f_of(twin, ids))


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
def test_gradient_x_input_is_the_embedding_gradient_times_the_embedding(pos_encoding):
    model = tiny_gpt(pos_encoding)
    result = gradient_x_input(model, IDS, CONTRAST)
    e = model.tok_emb.weight.detach()[torch.as_tensor(IDS)]  # (T, C)
    expected = (embedding_gradient(model, IDS) * e).sum(-1)  # (T,)
    assert isinstance(result, Attribution) and result.method == "gradient_x_input"
    assert result.scores.shape == (8,) and result.scores.dtype == torch.float64
    torch.testing.assert_close(result.scores, expected, rtol=1e-10, atol=1e-12)
    assert result.value == pytest.approx(value_of(model, IDS), rel=1e-12)
    assert result.baseline_value is None and result.completeness_gap is None


def test_gradient_x_input_matches_finite_differences_along_each_embedding():
    # score_t = Σ_c ∂f/∂e[t,c]·e[t,c] = d/dε f(e[t]·(1+ε)) at ε = 0: a central difference, float64, h = 1e-5
    model = tiny_gpt()
    scores = gradient_x_input(model, IDS, CONTRAST).scores
    e = model.tok_emb.weight.detach()[torch.as_tensor(IDS)].clone()  # (T, C)
    h = 1e-5
    for t in (0, 3, 7):
        up, down = e.clone(), e.clone()
        up[t] *= 1 + h
        down[t] *= 1 - h
        slope = (f_with_rows(model, IDS, up) - f_with_rows(model, IDS, down)) / (2 * h)
        assert float(scores[t]) == pytest.approx(slope, rel=1e-6, abs=1e-9)  # error O(h²)·f''' ≈ 1e-10


def test_a_token_after_the_read_position_gets_nothing_under_a_causal_mask():
    result = gradient_x_input(tiny_gpt(), IDS, Contrast(3, 9, position=4))
    assert (result.scores[5:] == 0).all() and (result.scores[:5] != 0).all()


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
def test_integrated_gradients_add_up_to_the_change_at_32_steps_in_float32(pos_encoding):
    model = tiny_gpt(pos_encoding, dtype=torch.float32, scale=1.0)  # GPT-2's own init
    result = integrated_gradients(model, IDS, CONTRAST)
    change = result.value - result.baseline_value
    assert result.method == "integrated_gradients" and result.steps == 32 and result.baseline == "zero"
    assert result.scores.dtype == torch.float32 and result.scores.shape == (8,)
    assert abs(change) > 1e-3  # a real change to explain
    assert abs(float(result.scores.sum()) - change) <= 0.01 * abs(change)
    assert result.completeness_gap == pytest.approx(abs(float(result.scores.sum()) - change) / abs(change), rel=1e-5)
    assert result.completeness_gap <= 0.01


@pytest.mark.parametrize("baseline", ["zero", "mean", 5])
def test_integrated_gradients_are_complete_to_1e6_at_many_steps_in_float64(baseline):
    model = tiny_gpt()  # weights × 8: f bends along the path, so few steps would not do
    few = integrated_gradients(model, IDS, CONTRAST, steps=4, baseline=baseline)
    many = integrated_gradients(model, IDS, CONTRAST, steps=2048, baseline=baseline)
    change = many.value - many.baseline_value
    assert abs(float(many.scores.sum()) - change) <= 1e-6 * abs(change)
    assert many.completeness_gap <= 1e-6 < few.completeness_gap  # the midpoint rule converges (error O(1/S²))


@pytest.mark.parametrize("baseline", ["zero", "mean", 5])
def test_the_values_are_f_at_the_input_and_at_the_baseline(baseline):
    model = tiny_gpt()
    result = integrated_gradients(model, IDS, CONTRAST, steps=8, baseline=baseline)
    weight = model.tok_emb.weight.detach()
    rows = {"zero": torch.zeros(8, 16), "mean": weight.mean(0).expand(8, 16), 5: weight[5].expand(8, 16)}[baseline]
    assert result.value == pytest.approx(value_of(model, IDS), rel=1e-12)
    assert result.baseline_value == pytest.approx(f_with_rows(model, IDS, rows.to(weight.dtype)), rel=1e-10)
    if baseline == 5:  # the same as the text of token 5 only, at the same positions
        assert result.baseline_value == pytest.approx(value_of(model, [5] * 8), rel=1e-12)


def test_integrated_gradients_are_the_midpoint_rule_done_one_point_at_a_time():
    model = tiny_gpt()
    steps = 6
    e = model.tok_emb.weight.detach()[torch.as_tensor(IDS)]  # (T, C)
    mean_grad = torch.zeros_like(e)
    for s in range(steps):  # zero baseline: the path is α·e
        alpha = (s + 0.5) / steps
        twin = untied(model)
        with torch.no_grad():
            twin.tok_emb.weight[torch.as_tensor(IDS)] = alpha * e
        (grad,) = torch.autograd.grad(f_of(twin, IDS), twin.tok_emb.weight)
        mean_grad += grad[torch.as_tensor(IDS)] / steps
    expected = (e * mean_grad).sum(-1)  # (T,)
    got = integrated_gradients(model, IDS, CONTRAST, steps=steps).scores
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_chunks_give_the_same_scores_as_one_pass(monkeypatch):
    model = tiny_gpt()
    whole = integrated_gradients(model, IDS, CONTRAST, steps=10)
    monkeypatch.setattr(gradients, "ACTIVATION_BUDGET", 1)  # one path point per pass
    chunked = integrated_gradients(model, IDS, CONTRAST, steps=10)
    torch.testing.assert_close(chunked.scores, whole.scores, rtol=1e-12, atol=1e-13)
    assert chunked.value == whole.value and chunked.baseline_value == whole.baseline_value


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_no_parameter_gets_a_grad_and_the_model_is_left_as_it_was(grad_enabled):
    model = tiny_gpt().train()
    with torch.set_grad_enabled(grad_enabled):
        gradient_x_input(model, IDS, CONTRAST)
        integrated_gradients(model, IDS, CONTRAST, steps=4)
        assert torch.is_grad_enabled() == grad_enabled
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    assert not any(p._forward_hooks for p in hook_points(model).values())


def test_mistakes_are_user_errors():
    model = tiny_gpt()
    with pytest.raises(UserError, match="baseline"):
        integrated_gradients(model, IDS, CONTRAST, baseline="random")
    with pytest.raises(UserError, match="vocabulary"):
        integrated_gradients(model, IDS, CONTRAST, baseline=25)
    with pytest.raises(UserError, match="steps"):
        integrated_gradients(model, IDS, CONTRAST, steps=0)
    with pytest.raises(UserError, match="target"):
        gradient_x_input(model, IDS, Contrast(target=99))
    with pytest.raises(UserError, match="position"):
        gradient_x_input(model, IDS, Contrast(target=1, position=8))
    with pytest.raises(UserError, match="block_size"):
        gradient_x_input(model, list(range(17)), CONTRAST)
