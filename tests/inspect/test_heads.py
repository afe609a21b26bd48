"""Head detectors: detection patterns against hand-written matrices, scores of hand-built patterns,
detect_heads against a loop-by-loop NumPy version, and a model trained here that grows an induction head."""

import numpy as np
import pytest
import torch

from kqv.config import GPTConfig
from kqv.errors import UserError
from kqv.inspect.cache import run_with_cache
from kqv.inspect.heads import (
    HeadScores,
    detect_heads,
    detection_score,
    duplicate_token_detection,
    first_token_detection,
    induction_detection,
    previous_token_detection,
    repeated_random_tokens,
)
from kqv.models.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

POSITIONAL = ["learned", "rope", "alibi", "none", "sinusoidal"]


def causal_uniform(T: int) -> torch.Tensor:
    """Row i spreads evenly over keys 0 … i."""
    return torch.tril(torch.ones(T, T, dtype=torch.float64)) / torch.arange(1, T + 1, dtype=torch.float64)[:, None]


def test_detection_patterns_of_a_short_sequence_with_repeats():
    ids = [5, 7, 5, 9, 7, 5]  # 5 at 0, 2, 5; 7 at 1, 4
    duplicate = [  # row i: the earlier positions holding ids[i]
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0],
    ]
    induction = [  # row i: the positions just after them
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 1, 0, 1, 0, 0],
    ]
    previous = np.eye(6, k=-1)
    first = np.zeros((6, 6))
    first[:, 0] = 1
    np.testing.assert_array_equal(duplicate_token_detection(ids).numpy(), duplicate)
    np.testing.assert_array_equal(induction_detection(torch.tensor(ids)).numpy(), induction)
    np.testing.assert_array_equal(previous_token_detection(6).numpy(), previous)
    np.testing.assert_array_equal(first_token_detection(6).numpy(), first)


def test_a_token_repeated_at_once_marks_its_own_cell_as_transformer_lens_does():
    # "A A": the copy of token 1 is token 0, the token after it is token 1 itself (the diagonal is kept)
    np.testing.assert_array_equal(induction_detection([4, 4]).numpy(), [[0, 0], [0, 1]])
    np.testing.assert_array_equal(previous_token_detection(1).numpy(), [[0]])


@pytest.mark.parametrize("T", [2, 5, 9])
def test_an_exact_previous_token_head_scores_t_minus_1_over_t(T):
    pattern = torch.zeros(T, T, dtype=torch.float64)
    pattern[0, 0] = 1.0  # the first query has only itself
    pattern[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    assert float(detection_score(pattern, previous_token_detection(T))) == pytest.approx((T - 1) / T, abs=1e-15)


@pytest.mark.parametrize("T", [1, 4, 10])
def test_a_uniform_causal_head_scores_its_share_by_hand(T):
    # row i gives 1/(i+1) to each key: previous gets Σ_{i≥1} 1/(i+1), first gets Σ_i 1/(i+1); Σ A = T
    harmonic = sum(1 / (i + 1) for i in range(T))
    pattern = causal_uniform(T)
    assert float(detection_score(pattern, previous_token_detection(T))) == pytest.approx((harmonic - 1) / T, abs=1e-15)
    assert float(detection_score(pattern, first_token_detection(T))) == pytest.approx(harmonic / T, abs=1e-15)
    # [r, r] with r all distinct (T even): row n + k has one induction cell (key k + 1), weight 1/(n + k + 1)
    if T % 2 == 0:
        n = T // 2
        ids = list(range(n)) * 2
        expected = sum(1 / (n + k + 1) for k in range(n)) / T
        assert float(detection_score(pattern, induction_detection(ids))) == pytest.approx(expected, abs=1e-15)


def test_scores_keep_the_leading_axes_and_broadcast_a_detection_per_sequence():
    g = torch.Generator().manual_seed(0)
    patterns = torch.softmax(torch.randn(3, 2, 4, 6, 6, generator=g, dtype=torch.float64), -1)  # (B, L, nh, T, T)
    ids = torch.randint(0, 3, (3, 6), generator=g)
    detection = torch.stack([induction_detection(row) for row in ids])  # (B, T, T)
    got = detection_score(patterns, detection[:, None, None])  # (B, L, nh)
    assert got.shape == (3, 2, 4)
    for b in range(3):
        for layer in range(2):
            for h in range(4):
                a, d = patterns[b, layer, h].numpy(), detection[b].numpy()
                assert float(got[b, layer, h]) == pytest.approx((a * d).sum() / a.sum(), abs=1e-14)
    assert float(detection_score(torch.zeros(3, 3), previous_token_detection(3))) == 0.0  # no weight: 0, not NaN


def reference_scores(patterns: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """(B, L, nh, T, T), (B, T) -> kind -> (L, nh), with the detection cells found by loops."""
    B, L, nh, T, _ = patterns.shape
    out = {kind: np.zeros((L, nh)) for kind in ("previous", "duplicate", "induction", "first")}
    for b in range(B):
        cells = {kind: np.zeros((T, T)) for kind in out}
        for i in range(T):
            cells["first"][i, 0] = 1
            if i >= 1:
                cells["previous"][i, i - 1] = 1
            for j in range(i):
                if ids[b, j] == ids[b, i]:
                    cells["duplicate"][i, j] = 1
                    cells["induction"][i, j + 1] = 1  # j + 1 ≤ i
        for kind, d in cells.items():
            for layer in range(L):
                for h in range(nh):
                    a = patterns[b, layer, h]
                    out[kind][layer, h] += (a * d).sum() / a.sum() / B
    return out


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
def test_detect_heads_matches_a_numpy_reference_on_the_models_patterns(pos_encoding):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=6, block_size=16, n_layer=2, n_head=2, n_embd=16, pos_encoding=pos_encoding)
    model = GPT(config).double().train()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(20.0)  # patterns far from uniform
    scores = detect_heads(model, length=5, batch=3, seed=4)
    assert model.training  # the mode is restored
    ids = repeated_random_tokens(6, 5, 3, seed=4)
    assert ids.shape == (3, 10) and (ids[:, :5] == ids[:, 5:]).all()
    _, cache = run_with_cache(model, ids, names="blocks.*.attn.pattern")
    patterns = cache.stack("attn.pattern").transpose(0, 1).numpy()  # (B, L, nh, T, T)
    expected = reference_scores(patterns, ids.numpy())
    assert isinstance(scores, HeadScores)
    for kind, want in expected.items():
        got = getattr(scores, kind)
        assert got.shape == (2, 2)
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    # vocabulary 6 repeats tokens inside r too: the ceiling counts every row with a cell
    rows_with_copies = np.mean([[ids[b, i].item() in ids[b, :i].tolist() for i in range(10)] for b in range(3)])
    assert scores.ceiling["duplicate"] == pytest.approx(rows_with_copies) and scores.ceiling["first"] == 1.0
    assert scores.ceiling["previous"] == pytest.approx(0.9)


def test_top_lists_the_best_heads_first():
    scores = HeadScores(*(torch.tensor([[0.1, 0.7], [0.9, 0.3]]),) * 4)
    top = scores.top("induction", 3)
    assert [(layer, head) for layer, head, _ in top] == [(1, 0), (0, 1), (1, 1)]
    assert [score for *_, score in top] == pytest.approx([0.9, 0.7, 0.3])
    with pytest.raises(UserError, match="induction"):
        scores.top("inductive")


def test_detect_heads_refuses_sequences_longer_than_the_model_reads():
    model = GPT(GPTConfig(vocab_size=6, block_size=16, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(UserError, match="block_size"):
        detect_heads(model, length=9, batch=2)
    with pytest.raises(UserError, match="batch"):
        detect_heads(model, length=4, batch=0)


def test_a_model_trained_on_repeated_random_tokens_grows_an_induction_head_in_layer_1():
    """[r, r] sequences: nothing in r can be predicted, everything in the second copy can, by induction.

    ALiBi, not learned positions: with learned positions and one fixed length n, the model copies with a
    single layer-0 head that attends by position to i − n + 1 (it scores as an induction head too: the
    detector reads patterns, not mechanisms). ALiBi gives no absolute positions to do that with, so the
    copy must come from the two-layer circuit. Found in about 1000 Adam steps; ~12 s on one core.
    """
    V, n = 32, 8
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, block_size=2 * n, n_layer=2, n_head=4, n_embd=32, pos_encoding="alibi"))
    at_init = detect_heads(model, length=n, batch=16, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(1500):
        x = repeated_random_tokens(V, n, 32, seed=1000 + step)  # (32, 2n)
        loss = model(x[:, :-1], x[:, 1:]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    trained = detect_heads(model, length=n, batch=16, seed=1)

    ceiling = trained.ceiling["induction"]  # ≈ ½: only the second copy has earlier copies to look at
    assert 0.45 < ceiling < 0.6
    assert float(at_init.induction.max()) < 0.12  # near-uniform attention: about Σ 1/(i+1) over the copy / 2n
    best_layer_1 = float(trained.induction[1].max())
    assert best_layer_1 > 0.35 and best_layer_1 > 0.6 * ceiling
    assert best_layer_1 > 2 * float(trained.induction[0].max())  # the circuit's second half is in layer 1
    assert trained.top("induction", 1)[0][0] == 1

    x = repeated_random_tokens(V, n, 64, seed=7)  # fresh sequences
    model.eval()
    with torch.no_grad():
        logits = model(x).logits  # (64, 2n, V)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none").mean(0)
    first, second = float(nll[: n - 1].mean()), float(nll[n:].mean())  # predicting r[1:], then the copy r[1:]
    assert first > 3.0  # ≈ ln 32: random tokens
    assert second < 0.4 * first  # the model copies
