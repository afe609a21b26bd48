"""Greedy and beam search: beam 1 = greedy, batching does not matter, beams never lose to greedy, scores are true,
pad and bos never proposed, and a wide enough beam finds the brute-force best under GNMT's length penalty."""

import itertools

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
    c = TransformerConfig(vocab_size=16, max_len=24, n_layer_enc=1, n_layer_dec=1, n_head=2, n_embd=32, d_ff=64,
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
        assert max(len(h.tokens) for h in hyps) == 1  # 2 tokens at most, eos included; and the limit is reached


def test_finished_hypotheses_are_kept_when_live_beams_go_on():
    """A model whose best first move is eos: the short hypothesis must survive longer, worse beams."""
    torch.manual_seed(0)
    c = TransformerConfig(vocab_size=8, max_len=16, n_layer_enc=1, n_layer_dec=1, n_head=1, n_embd=8, d_ff=8,
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


def untrained(seed: int, vocab_size: int = 12, max_len: int = 24) -> Transformer:
    """Random weights: pad and bos are as likely as any token, so an unmasked search would emit them."""
    torch.manual_seed(seed)
    c = TransformerConfig(vocab_size=vocab_size, max_len=max_len, n_layer_enc=1, n_layer_dec=1, n_head=2, n_embd=16,
                          d_ff=32, dropout=0.0)  # fmt: skip
    return Transformer(c).double().eval()


def random_sources(seed: int, B: int, vocab_size: int) -> torch.Tensor:
    """(B, 8) eos-terminated, right-padded source ids, 1–6 tokens each."""
    g = torch.Generator().manual_seed(seed)
    src = torch.full((B, 8), PAD)
    for i in range(B):
        n = int(torch.randint(1, 7, (1,), generator=g))
        src[i, :n] = torch.randint(3, vocab_size, (n,), generator=g)
        src[i, n] = EOS
    return src


@pytest.mark.parametrize("seed", range(4))
def test_untrained_models_never_get_pad_or_bos_and_the_guarantees_hold(seed):
    model, src = untrained(seed), random_sources(seed, B=12, vocab_size=12)
    runs = {
        "greedy": lambda x: greedy_decode(model, x),
        "beam 1": lambda x: beam_search(model, x, beam=1, alpha=0.0),
        "beam 2": lambda x: beam_search(model, x, beam=2, alpha=0.6),
        "beam 4": lambda x: beam_search(model, x, beam=4, alpha=1.0),
    }
    outputs = {name: run(src) for name, run in runs.items()}
    for name, hyps in outputs.items():
        assert not [h.tokens for h in hyps if PAD in h.tokens or BOS in h.tokens], name
        teacher_forced = sequence_logprob(model, src, [h.tokens for h in hyps])
        assert [h.logprob for h in hyps] == pytest.approx(teacher_forced, abs=1e-9), name
        alone = [runs[name](src[i : i + 1, : int((src[i] != PAD).sum())])[0] for i in range(0, len(src), 3)]
        assert [h.tokens for h in alone] == [h.tokens for h in hyps[::3]], name  # batch size 1, unpadded = batched
    greedy = outputs["greedy"]
    assert [h.tokens for h in outputs["beam 1"]] == [h.tokens for h in greedy]
    assert [h.logprob for h in outputs["beam 1"]] == pytest.approx([h.logprob for h in greedy], abs=1e-9)
    for name, alpha in (("beam 2", 0.6), ("beam 4", 1.0)):
        for g, b in zip(greedy, outputs[name], strict=True):
            assert b.score >= g.logprob / length_penalty(len(g.tokens) + 1, alpha) - 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_greedy_takes_the_argmax_over_every_token_but_pad_and_bos(seed):
    """Reference: teacher forcing on greedy's own output; and the model itself would have picked pad or bos."""
    model, src = untrained(seed), random_sources(seed, B=12, vocab_size=12)
    hyps = greedy_decode(model, src)
    limits = length_limits(src, PAD, 1.5, 10, cap=model.config.max_len - 1)
    preferred_special = 0
    for i, h in enumerate(hyps):
        tgt_in = torch.tensor([[BOS, *h.tokens]])
        logits = model(src[i : i + 1], tgt_in).logits[0]  # (T, V)
        preferred_special += int(torch.isin(logits.argmax(-1), torch.tensor([PAD, BOS])).sum())
        allowed = logits.clone()
        allowed[:, [PAD, BOS]] = float("-inf")
        expected = allowed.argmax(-1).tolist()  # (T,)
        if len(h.tokens) + 1 == int(limits[i]):
            expected[-1] = EOS  # at the length limit only eos may follow
        assert h.tokens + [EOS] == expected
    assert preferred_special > 0  # unmasked, greedy would have emitted them: the mask is what the test checks


@pytest.mark.parametrize("alpha", [0.6, 1.0, 2.0])
def test_each_score_is_the_log_probability_over_gnmts_length_penalty(model, alpha):
    """score = log P(Y | X) / ((5 + |Y|) / 6) ** alpha, |Y| = tokens + eos, with log P from teacher forcing."""
    for m, src in ((model, sources(seed=3)), (untrained(7), random_sources(7, B=12, vocab_size=12))):
        for beam in (1, 3):
            hyps = beam_search(m, src, beam=beam, alpha=alpha, max_len_b=6)
            teacher_forced = sequence_logprob(m, src, [h.tokens for h in hyps])
            expected = [lp / ((5 + len(h.tokens) + 1) / 6) ** alpha for lp, h in zip(teacher_forced, hyps, strict=True)]
            assert [h.score for h in hyps] == pytest.approx(expected, rel=1e-9, abs=1e-12)
            assert len({len(h.tokens) for h in hyps}) > 1  # several lengths, so a wrong |Y| shows


def test_a_beam_as_wide_as_the_output_space_returns_the_brute_force_best():
    """Every output of ≤ 3 tokens over a 5-token vocabulary, scored by teacher forcing and GNMT's penalty."""
    model = untrained(seed=1, vocab_size=8, max_len=8)
    src = torch.tensor([[3, 4, 5, EOS], [6, EOS, PAD, PAD], [7, 3, EOS, PAD]])
    words = range(3, 8)  # every id but pad, bos, eos
    outputs = [list(seq) for n in range(4) for seq in itertools.product(words, repeat=n)]  # 156 sequences
    logprobs = [sequence_logprob(model, src[i : i + 1].expand(len(outputs), -1), outputs) for i in range(len(src))]
    bests = {}
    for alpha in (0.0, 0.6, 1.5):
        # a beam of 156 never drops a hypothesis: it keeps all 5^t live ones and all 156 finished ones
        hyps = beam_search(model, src, beam=len(outputs), alpha=alpha, max_len_a=0.0, max_len_b=4)
        for i, h in enumerate(hyps):
            scores = [lp / ((5 + len(y) + 1) / 6) ** alpha for lp, y in zip(logprobs[i], outputs, strict=True)]
            best = max(range(len(outputs)), key=scores.__getitem__)
            assert h.tokens == outputs[best], (alpha, i)
            assert h.score == pytest.approx(scores[best], rel=1e-9)
            bests.setdefault(i, []).append(tuple(outputs[best]))
    for x, y in ((0, 1), (1, 2)):  # alpha changes the answer: 0 vs 0.6 and 0.6 vs 1.5, each for some sentence
        assert any(b[x] != b[y] for b in bests.values())
