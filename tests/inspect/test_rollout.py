"""Attention rollout against a loop-by-loop NumPy version of its formula, and attention flow against
max flows worked out by hand and solved as linear programs (scipy.optimize.linprog)."""

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from kqv.config import GPTConfig
from kqv.errors import UserError
from kqv.inspect.cache import hook_points, run_with_cache
from kqv.inspect.rollout import Rollout, attention_flow, attention_rollout, rollout
from kqv.models.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

POSITIONAL = ["learned", "rope", "alibi", "none", "sinusoidal"]


def reference_rollout(patterns: np.ndarray, residual: bool = True) -> np.ndarray:
    """(L, nh, T, T) -> (L, T, T), written out cell by cell: average heads, add I, renormalise rows, multiply."""
    L, nh, T, _ = patterns.shape
    out = np.zeros((L, T, T))
    for layer in range(L):
        mixing = np.zeros((T, T))
        for i in range(T):
            for j in range(T):
                mixing[i, j] = sum(patterns[layer, h, i, j] for h in range(nh)) / nh
            if residual:
                mixing[i, i] += 1.0
                total = sum(mixing[i, j] for j in range(T))
                for j in range(T):
                    mixing[i, j] /= total
        for i in range(T):
            for j in range(T):
                if layer == 0:
                    out[0, i, j] = mixing[i, j]
                else:
                    out[layer, i, j] = sum(mixing[i, k] * out[layer - 1, k, j] for k in range(T))
    return out


def random_causal_patterns(L=3, nh=2, T=6, seed=0) -> torch.Tensor:
    """(L, nh, T, T) float64: softmax of random scores under a causal mask."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(L, nh, T, T, generator=g, dtype=torch.float64) * 2
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)


def tiny_gpt(pos_encoding="learned") -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=30, block_size=16, n_layer=3, n_head=2, n_embd=16, pos_encoding=pos_encoding)
    model = GPT(config).double().eval()
    with torch.no_grad():  # larger weights than GPT-2's init, so the patterns are far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(20.0)
    return model


IDS = [3, 17, 5, 5, 29, 0, 11, 3, 8, 21]


@pytest.mark.parametrize("residual", [True, False])
def test_rollout_matches_the_formula_written_out_on_random_patterns(residual):
    patterns = random_causal_patterns()
    expected = reference_rollout(patterns.numpy(), residual)
    got = attention_rollout(patterns, residual)
    assert got.shape == (3, 6, 6) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    # the same from patterns already averaged over heads
    np.testing.assert_allclose(attention_rollout(patterns.mean(1), residual).numpy(), expected, rtol=0, atol=1e-12)


def test_rollout_of_a_two_token_example_worked_by_hand():
    # both layers: token 0 sees itself, token 1 splits evenly; with the residual Â = [[1, 0], [¼, ¾]]
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    got = attention_rollout(torch.stack([a, a]))
    np.testing.assert_allclose(got[0].numpy(), [[1, 0], [0.25, 0.75]], atol=1e-15)
    np.testing.assert_allclose(got[1].numpy(), [[1, 0], [0.25 + 0.75 * 0.25, 0.75**2]], atol=1e-15)
    # without the residual: the plain product Ā·Ā
    np.testing.assert_allclose(attention_rollout(torch.stack([a, a]), residual=False)[1].numpy(), (a @ a).numpy())


def test_residual_false_is_the_plain_product_of_head_averages():
    patterns = random_causal_patterns(L=4, nh=3, T=5, seed=3)
    mean = patterns.mean(1).numpy()  # (L, T, T)
    got = attention_rollout(patterns, residual=False).numpy()
    np.testing.assert_allclose(got[-1], mean[3] @ mean[2] @ mean[1] @ mean[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1], mean[1] @ mean[0], rtol=0, atol=1e-12)


def test_a_query_that_sees_nothing_keeps_itself_and_makes_no_nan():
    patterns = random_causal_patterns(L=2, nh=2, T=4, seed=5)
    patterns[0, :, 2] = 0.0  # query 2 of layer 0 sees no key (a fully masked row)
    got = attention_rollout(patterns)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got[0, 2].numpy(), [0, 0, 1, 0], atol=1e-15)  # only the residual: itself
    np.testing.assert_allclose(got.sum(-1).numpy(), np.ones((2, 4)), atol=1e-12)
    plain = attention_rollout(patterns, residual=False)
    assert torch.isfinite(plain).all() and (plain[0, 2] == 0).all()  # no residual: nothing at all


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
def test_rollout_of_a_model_matches_the_formula_on_its_own_patterns(pos_encoding):
    model = tiny_gpt(pos_encoding)
    _, cache = run_with_cache(model, torch.tensor([IDS]), names="blocks.*.attn.pattern")
    patterns = cache.stack("attn.pattern")[:, 0].numpy()  # (L, nh, T, T)
    assert patterns.std() > 0.05  # far from uniform: a real test of the mixing
    result = rollout(model, IDS)
    assert isinstance(result, Rollout) and result.layers.shape == (3, 10, 10) and result.final.shape == (10, 10)
    np.testing.assert_allclose(result.layers.numpy(), reference_rollout(patterns), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.final.numpy(), result.layers[-1].numpy())
    np.testing.assert_allclose(result.final.sum(-1).numpy(), np.ones(10), atol=1e-12)  # every row a distribution
    assert (result.final.triu(1) == 0).all()  # causal: nothing comes from a later token
    plain = rollout(model, torch.tensor(IDS), residual=False)
    np.testing.assert_allclose(plain.layers.numpy(), reference_rollout(patterns, residual=False), rtol=0, atol=1e-12)


def test_rollout_restores_the_mode_and_leaves_no_hooks():
    model = tiny_gpt().train()
    rollout(model, torch.tensor([IDS]))
    assert model.training
    assert not any(p._forward_hooks for p in hook_points(model).values())


def test_mistakes_are_user_errors():
    model = tiny_gpt()
    with pytest.raises(UserError, match="block_size"):
        rollout(model, list(range(17)))
    with pytest.raises(UserError, match="empty"):
        rollout(model, [])
    with pytest.raises(UserError, match="vocabulary"):
        rollout(model, [1, 30])
    with pytest.raises(UserError, match="shape"):
        attention_rollout(torch.rand(2, 3))
    with pytest.raises(UserError, match="T × T"):
        attention_rollout(torch.rand(2, 3, 4))


# ---- attention flow


def linprog_max_flow(mixing: np.ndarray, source: int, sink: int) -> float:
    """The max flow of the layered graph (edges key j of layer l -> query i of layer l+1, capacity mixing[l, i, j])
    from input `source` to top position `sink`, solved as a linear program over edge flows."""
    L, T, _ = mixing.shape
    edges = [
        (layer * T + j, (layer + 1) * T + i, mixing[layer, i, j])
        for layer in range(L)
        for i in range(T)
        for j in range(T)
    ]
    n_nodes = (L + 1) * T
    src, dst = source, L * T + sink
    balance = np.zeros((n_nodes, len(edges)))  # inflow − outflow of each node
    for e, (a, b, _) in enumerate(edges):
        balance[a, e] -= 1
        balance[b, e] += 1
    inner = [n for n in range(n_nodes) if n not in (src, dst)]
    gain = -balance[dst]  # maximise the sink's inflow
    result = linprog(gain, A_eq=balance[inner], b_eq=np.zeros(len(inner)), bounds=[(0, c) for *_, c in edges])
    assert result.success
    return -result.fun


def test_attention_flow_of_a_small_graph_worked_by_hand():
    # layer 0: Ā_0 = [[1, 0], [½, ½]]; layer 1: Ā_1 = [[1, 0], [0.3, 0.7]]; no residual
    # top 1 from input 0: 0→(1,0)→top1 carries min(1, 0.3) = 0.3, 0→(1,1)→top1 min(½, 0.7) = ½: 0.8
    # top 1 from input 1: 1→(1,1)→top1, min(½, 0.7) = ½;  top 0 from input 0: 1;  top 0 from input 1: no path
    patterns = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.3, 0.7]]], dtype=torch.float64)
    flow = attention_flow(patterns, residual=False)
    np.testing.assert_allclose(flow.numpy(), [[1.0, 0.0], [0.8, 0.5]], rtol=0, atol=1e-5)  # capacities in 2⁻²⁰
    # rollout of the same graph sums paths' products instead: [[1, 0], [0.65, 0.35]]
    np.testing.assert_allclose(attention_rollout(patterns, residual=False)[-1].numpy(), [[1, 0], [0.65, 0.35]])


@pytest.mark.parametrize("residual", [True, False])
def test_attention_flow_matches_a_linear_program_on_random_patterns(residual):
    patterns = random_causal_patterns(L=2, nh=2, T=4, seed=7)
    flow = attention_flow(patterns, residual).numpy()
    mixing = reference_rollout(patterns.numpy()[:1], residual)[0]  # layer 0's Â, from the reference
    second = reference_rollout(patterns.numpy()[1:], residual)[0]
    expected = np.array([[linprog_max_flow(np.stack([mixing, second]), j, q) for j in range(4)] for q in range(4)])
    np.testing.assert_allclose(flow, expected, rtol=0, atol=1e-5)
    assert (np.triu(flow, 1) == 0).all()  # causal: no path from a later token


def test_attention_flow_refuses_long_inputs():
    with pytest.raises(UserError, match="rollout"):
        attention_flow(torch.eye(65).expand(1, 65, 65))
