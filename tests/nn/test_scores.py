import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kqv.nn.scores import SCORES, make_score

B, NH, TQ, TK, HS = 2, 3, 4, 5, 6  # all different, so a transposed axis cannot pass


def random_qk(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, NH, TQ, HS, generator=g, dtype=dtype)
    k = torch.randn(B, NH, TK, HS, generator=g, dtype=dtype)
    return q, k


def reference(name, score, q, k):
    """Per-element float64 reference: a loop over (b, h, i, j) with plain Python/NumPy arithmetic."""
    q, k = q.detach().double().numpy(), k.detach().double().numpy()
    out = np.zeros((B, NH, TQ, TK))
    for b in range(B):
        for h in range(NH):
            for i in range(TQ):
                for j in range(TK):
                    qi, kj = q[b, h, i], k[b, h, j]
                    if name == "scaled_dot":
                        s = sum(qi[d] * kj[d] for d in range(HS)) / math.sqrt(HS)
                    elif name == "dot":
                        s = sum(qi[d] * kj[d] for d in range(HS))
                    elif name == "squared_dot":
                        s = sum(qi[d] ** 2 * kj[d] ** 2 for d in range(HS)) / math.sqrt(HS)
                    elif name == "dot_squared":
                        s = sum(qi[d] * kj[d] for d in range(HS)) ** 2 / HS
                    elif name == "cosine":
                        tau = math.exp(min(score.log_temperature[h].item(), math.log(100)))
                        s = tau * float(qi @ kj) / (math.sqrt(float(qi @ qi)) * math.sqrt(float(kj @ kj)))
                    elif name == "additive":
                        W, U, v = (p.detach().double().numpy()[h] for p in (score.W, score.U, score.v))
                        s = sum(
                            v[e] * math.tanh(sum(W[e, d] * qi[d] + U[e, d] * kj[d] for d in range(HS)))
                            for e in range(HS)
                        )
                    elif name == "negated_dot":
                        s = -sum(qi[d] * kj[d] for d in range(HS)) / math.sqrt(HS)
                    elif name == "neg_distance":
                        s = -sum((qi[d] - kj[d]) ** 2 for d in range(HS)) / math.sqrt(HS)
                    out[b, h, i, j] = s
    return out


@pytest.mark.parametrize("name", list(SCORES))
def test_score_matches_per_element_reference(name):
    torch.manual_seed(1)
    score = make_score(name, NH, HS).double()
    if name == "cosine":  # distinct temperatures per head, so a mixed-up head axis fails
        with torch.no_grad():
            score.log_temperature.copy_(torch.log(torch.tensor([10.0, 3.0, 0.5])))
    q, k = random_qk()
    got = score(q, k)
    assert got.shape == (B, NH, TQ, TK)
    np.testing.assert_allclose(got.detach().numpy(), reference(name, score, q, k), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(SCORES))
def test_score_runs_in_float32(name):
    score = make_score(name, NH, HS)
    q, k = random_qk(dtype=torch.float32)
    got = score(q, k)
    assert got.dtype == torch.float32 and got.shape == (B, NH, TQ, TK)
    np.testing.assert_allclose(got.detach().numpy(), reference(name, score, q, k), rtol=1e-4, atol=1e-5)


def test_scaled_dot_divides_by_sqrt_head_size_not_model_width():
    q, k = random_qk(dtype=torch.float32)
    got = make_score("scaled_dot", NH, HS)(q, k)
    assert torch.equal(got, q @ k.transpose(-2, -1) / math.sqrt(HS))
    assert not torch.allclose(got, q @ k.transpose(-2, -1) / math.sqrt(NH * HS))


def test_only_scaled_dot_may_use_the_fast_path_and_it_agrees_with_sdpa():
    assert {name for name, cls in SCORES.items() if cls.fast_path_ok} == {"scaled_dot"}
    q, k = random_qk()
    v = torch.randn(B, NH, TK, HS, dtype=torch.float64)
    eager = torch.softmax(make_score("scaled_dot", NH, HS)(q, k), dim=-1) @ v  # (B, nh, Tq, hs)
    torch.testing.assert_close(eager, F.scaled_dot_product_attention(q, k, v), rtol=1e-12, atol=1e-12)


def test_squared_dot_scores_are_never_negative():
    q, k = random_qk()
    assert (make_score("squared_dot", NH, HS)(q, k) >= 0).all()
    assert (make_score("scaled_dot", NH, HS)(q, k) < 0).any()  # while plain dot products are


def test_dot_squared_is_the_square_of_the_dot_product_not_of_the_components():
    q, k = random_qk()
    qn, kn = q.numpy(), k.numpy()
    expected = np.einsum("bhqd,bhkd->bhqk", qn, kn) ** 2 / HS  # (q·kᵀ)² / hs, in NumPy
    got = make_score("dot_squared", NH, HS)(q, k)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert (got >= 0).all()
    literal = np.einsum("bhqd,bhkd->bhqk", qn**2, kn**2) / math.sqrt(HS)  # squared_dot: (q⊙q)·(k⊙k)ᵀ / √hs
    np.testing.assert_allclose(make_score("squared_dot", NH, HS)(q, k).numpy(), literal, rtol=1e-12)
    assert not np.allclose(expected, literal)
    torch.testing.assert_close(make_score("dot_squared", NH, HS)(-q, k), got)  # the sign of q is lost


def test_cosine_temperature_starts_at_10_and_is_capped_at_100():
    score = make_score("cosine", NH, HS)
    torch.testing.assert_close(score.temperature(), torch.full((NH,), 10.0))
    q, _ = random_qk(dtype=torch.float32)
    self_scores = score(q, q).diagonal(dim1=-2, dim2=-1)  # cos(q, q) = 1
    torch.testing.assert_close(self_scores, torch.full_like(self_scores, 10.0))
    with torch.no_grad():
        score.log_temperature.fill_(10.0)
    torch.testing.assert_close(score.temperature(), torch.full((NH,), 100.0))


def test_cosine_is_finite_for_zero_vectors():
    score = make_score("cosine", NH, HS)
    q, k = random_qk(dtype=torch.float32)
    q = q.clone().requires_grad_(True)
    with torch.no_grad():
        q[0, 0, 0] = 0
    out = score(q, k)
    assert torch.isfinite(out).all() and (out[0, 0, 0] == 0).all()
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize(("name", "params"), [("cosine", ["log_temperature"]), ("additive", ["W", "U", "v"])])
def test_gradients_reach_learned_parameters(name, params):
    score = make_score(name, NH, HS)
    q, k = (t.requires_grad_(True) for t in random_qk(dtype=torch.float32))
    (score(q, k) * torch.randn(B, NH, TQ, TK)).sum().backward()
    named = dict(score.named_parameters())
    assert set(named) == set(params)
    for p in params:
        grad = named[p].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, p
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


def test_parameter_shapes():
    additive = make_score("additive", NH, HS)
    assert additive.W.shape == additive.U.shape == (NH, HS, HS)
    assert additive.v.shape == (NH, HS)
    assert make_score("cosine", NH, HS).log_temperature.shape == (NH,)
    for name in ("scaled_dot", "dot", "squared_dot", "dot_squared", "negated_dot", "neg_distance"):
        assert not list(make_score(name, NH, HS).parameters())


def test_every_score_has_its_registry_name():
    for name, cls in SCORES.items():
        assert cls.name == name and make_score(name, NH, HS).name == name


def test_unknown_score_lists_valid_names():
    with pytest.raises(ValueError) as info:
        make_score("dotty", NH, HS)
    for name in ("scaled_dot", "dot", "squared_dot", "cosine", "additive"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="head_size"):
        make_score("dot", NH, 0)


def test_negated_dot_is_scaled_dot_with_the_query_negated():
    q, k = random_qk()
    torch.testing.assert_close(make_score("negated_dot", NH, HS)(q, k), make_score("scaled_dot", NH, HS)(-q, k))


def test_neg_distance_puts_the_nearest_key_first_and_differs_from_scaled_dot_by_key_norms_only():
    q, k = random_qk()
    got = make_score("neg_distance", NH, HS)(q, k)
    nearest = torch.cdist(q, k).argmin(-1)  # (B, nh, Tq)
    assert torch.equal(got.argmax(-1), nearest)
    # softmax ignores the per-row ‖q‖² term: the weights are those of 2·q·k − ‖k‖², all over √hs
    expected = (2 * q @ k.transpose(-2, -1) - (k * k).sum(-1)[:, :, None, :]) / math.sqrt(HS)
    torch.testing.assert_close(torch.softmax(got, -1), torch.softmax(expected, -1))
