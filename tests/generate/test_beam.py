"""Greedy and beam search: beam 1 = greedy, batching does not matter, beams never lose to greedy, scores are true."""

import pytest
import torch

from kqv.config import TransformerConfig
from kqv.generate.beam import beam_search, greedy_decode, length_limits, length_penalty, sequence_logprob
from kqv.models.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(scope="module")
def model():
    """A tiny model trained for a few hundred steps to copy-and-reverse digit strings: peaked, not uniform, outputs."""
    torch.manual_seed(0)
    c = TransformerConfig(vocab_size=16, max_len=24, n_layer_enc=1, n_layer_dec=1, n_head=2, d_model=32, d_ff=64,
                          dropout=0.0, norm_first=True)  # fmt: skip
    m = Transformer(c).double()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        lengths = torch.randint(2, 8, (32,), generator=g)
        src = torch.full((32, 9), PAD)
        tgt_in = torch.full((32, 9), PAD)
        tgt_out = torch.full((32, 9), PAD)
        for i, n in enumerate(lengths.tolist()):
            ids = torch.randint(3, 16, (n,), generator=g)
            src[i, :n], src[i, n] = ids, EOS
            rev = ids.flip(0)
            tgt_in[i, 0], tgt_in[i, 1 : n + 1] = BOS, rev
            tgt_out[i, :n], tgt_out[i, n] = rev, EOS
        loss = m(src, tgt_in, tgt_out).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def sources(seed=1, B=24):
    g = torch.Generator().manual_seed(seed)
    src = torch.full((B, 10), PAD)
    for i in range(B):
        n = int(torch.randint(1, 9, (1,), generator=g))
        src[i, :n] = torch.randint(3, 16, (n,), generator=g)
        src[i, n] = EOS
    return src


def test_greedy_learned_the_task_so_the_decoding_tests_mean_something(model):
    src = sources()
    hyps = greedy_decode(model, src)
    right = sum(h.tokens == src[i][src[i] > EOS].flip(0).tolist() for i, h in enumerate(hyps))
    assert right >= 4  # partly learned: confident, and still with room for beams to beat greedy
    per_token = sum(h.logprob for h in hyps) / sum(len(h.tokens) + 1 for h in hyps)
    assert per_token > -1.0  # far from uniform (log 1/16 = -2.77)


def test_beam_size_one_equals_greedy(model):
    src = sources()
    greedy = greedy_decode(model, src)
    beam = beam_search(model, src, beam=1, alpha=0.0)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    for a, b in zip(beam, greedy, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-9)


@pytest.mark.parametrize("decode", ["greedy", "beam"])
def test_results_do_not_depend_on_how_sentences_are_batched(model, decode):
    src = sources()

    def run(x):
        return greedy_decode(model, x) if decode == "greedy" else beam_search(model, x, beam=4, alpha=0.6)

    together = [h.tokens for h in run(src)]
    alone = [run(src[i : i + 1, : int((src[i] != PAD).sum())])[0].tokens for i in range(len(src))]
    halves = [h.tokens for h in run(src[:11])] + [h.tokens for h in run(src[11:])]
    assert together == alone == halves


def test_reported_log_probabilities_are_what_the_model_assigns(model):
    src = sources()
    for hyps in (greedy_decode(model, src), beam_search(model, src, beam=3, alpha=0.0)):
        teacher_forced = sequence_logprob(model, src, [h.tokens for h in hyps])
        assert [h.logprob for h in hyps] == pytest.approx(teacher_forced, abs=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_the_beams_best_never_scores_lower_than_greedy(model, alpha):
    """Under the beam's own objective (log P / lp), for each of many sentences."""
    src = sources(seed=2, B=64)
    greedy = greedy_decode(model, src)
    beam = beam_search(model, src, beam=4, alpha=alpha)
    for g, b in zip(greedy, beam, strict=True):
        greedy_score = g.logprob / length_penalty(len(g.tokens) + 1, alpha)
        assert b.score >= greedy_score - 1e-9


def test_length_penalty_is_gnmts():
    assert length_penalty(1, 0.6) == 1.0  # ((5 + 1) / 6) ** α
    assert length_penalty(7, 0.6) == pytest.approx(2.0**0.6)
    assert length_penalty(10, 0.0) == 1.0


def test_length_limits_follow_the_source_and_the_model():
    src = torch.tensor([[5, 6, 7, EOS, PAD, PAD], [5, EOS, PAD, PAD, PAD, PAD]])
    assert length_limits(src, PAD, 1.5, 10, cap=100).tolist() == [16, 13]  # ⌊1.5·4 + 10⌋, ⌊1.5·2 + 10⌋
    assert length_limits(src, PAD, 1.5, 10, cap=12).tolist() == [12, 12]


def test_decoding_stops_at_the_length_limit(model):
    src = sources()
    for hyps in (greedy_decode(model, src, 0.0, 2), beam_search(model, src, 3, 0.6, 0.0, 2)):
        assert all(len(h.tokens) <= 1 for h in hyps)  # 2 tokens at most, eos included


def test_finished_hypotheses_are_kept_when_live_beams_go_on():
    """A model whose best first move is eos: the short hypothesis must survive longer, worse beams."""
    torch.manual_seed(0)
    c = TransformerConfig(vocab_size=8, max_len=16, n_layer_enc=1, n_layer_dec=1, n_head=1, d_model=8, d_ff=8,
                          dropout=0.0)  # fmt: skip
    m = Transformer(c).double().eval()
    with torch.no_grad():  # logits = h · Eᵀ: make eos's row dominate whatever h is
        m.embed.weight[EOS] = 0
        m.decoder[0].ln_3.weight.zero_()
        m.decoder[0].ln_3.bias.zero_()
        m.decoder[0].ln_3.bias[0] = 1.0
        m.embed.weight[:, 0] = torch.tensor([0, 0, 5.0, 1, 1, 1, 1, 1], dtype=torch.double)
    src = torch.tensor([[3, 4, EOS]])
    best = beam_search(m, src, beam=3, alpha=0.0)[0]
    assert best.tokens == []
    assert best.logprob == pytest.approx(sequence_logprob(m, src, [[]])[0])
