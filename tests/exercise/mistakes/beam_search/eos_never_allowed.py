# kqv exercise: beam-search
# expect: result | eos is never allowed before the last step
# mistake: eos only at the last step
"""Beam search with a length penalty: the decoding of kqv's translation models, over any step function.

A decoder scores the next token given a prefix: step([bos, y1, …, yt]) returns the log-probabilities of
every token that could come next. Greedy decoding takes the likeliest token each time and can walk into
a dead end; beam search keeps the beam_size best partial hypotheses instead, and grows them all.

The score of a finished output y1 … yn−1 eos (Wu et al. 2016, GNMT, eq. 14) is

    score = log P(y1 … yn−1 eos) / length_penalty(n, alpha),   length_penalty(n, alpha) = ((5 + n) / 6) ** alpha

log P is the sum of the log-probabilities of its tokens, eos included, and n is its length counting eos
and not bos (a lone eos has n = 1, and length_penalty(1, alpha) = 1). alpha = 0 ranks outputs by plain
log-probability, which favours short ones; a larger alpha lets longer ones compete.

The algorithm: kqv's own (src/kqv/generate/beam.py). Follow it exactly, the checker compares with it.

    live = [([], 0.0)]     hypotheses as (tokens after bos, summed log-probability); finished = []
    for t = 1, 2, …, max_len:
      1. extend every live hypothesis by every token:   log-prob + step([bos, *tokens])[token].
         At t = max_len only eos may follow: no output is longer than max_len tokens, eos included.
      2. rank all the candidates, of every live hypothesis together, by summed log-probability.
      3. each of the best beam_size candidates that ends in eos is finished, while fewer than beam_size
         are: set it aside with its score (above). A finished hypothesis is never extended.
      4. the best beam_size candidates that do not end in eos, wherever they rank, are the next live ones.
      5. stop once beam_size hypotheses have finished.
    The answer is the finished hypothesis with the best score.

Given below: length_penalty, a made-up model to try your search on, and a brute force that scores every
possible output (a beam as wide as the output space must agree with it).

Check your work:  kqv exercise check beam_search.py
(Running the file, python beam_search.py, prints your search next to the brute force.)
"""

import itertools

import numpy as np
import torch


def length_penalty(n: int, alpha: float) -> float:
    """GNMT's length penalty ((5 + n) / 6) ** alpha for an output of n tokens, eos counted, bos not."""
    return ((5.0 + n) / 6.0) ** alpha


def toy_model(vocab: int = 5, seed: int = 0):
    """A made-up decoder to try beam search on -> (step, bos, eos).

    step(prefix) -> log-probabilities (vocab,), a float64 tensor: the same every time for the same prefix
    (drawn from a generator seeded by it). Its tokens are 0 … vocab − 1 with eos = 0; bos = vocab is never
    an output, it only starts every prefix."""

    def step(prefix: list[int]) -> torch.Tensor:
        logits = 2.0 * np.random.default_rng([seed, *prefix]).standard_normal(vocab)
        return torch.from_numpy(logits - np.logaddexp.reduce(logits))

    return step, vocab, 0


def brute_force(step, bos: int, eos: int, vocab: int, max_len: int, alpha: float) -> tuple[list[int], float]:
    """Every output of at most max_len tokens (eos included), scored as beam search scores them -> the best
    (tokens without bos and eos, score)."""
    words = [token for token in range(vocab) if token != eos]
    best = None
    for n_words in range(max_len):
        for words_in_order in itertools.product(words, repeat=n_words):
            prefix, logprob = [bos], 0.0
            for token in [*words_in_order, eos]:
                logprob += float(step(prefix)[token])
                prefix.append(token)
            score = logprob / length_penalty(n_words + 1, alpha)
            if best is None or score > best[1]:
                best = (list(words_in_order), score)
    return best


# ---- yours -------------------------------------------------------------------------------------------


def beam_search(step, bos: int, eos: int, beam_size: int, max_len: int, alpha: float) -> tuple[list[int], float]:
    """The best output under score = log P / length_penalty(n, alpha), by the algorithm above.

    step:       step(prefix) -> log-probabilities of the next token, a float64 tensor (V,), V = len(step(…));
                prefix is a list of ints: bos, then the hypothesis's tokens.
    bos, eos:   the ids that start every prefix and end every output. bos is never a candidate (step gives
                it no entry or a log-probability of −inf); eos may be, at every step.
    beam_size:  how many hypotheses stay live (≥ 1), and how many must finish before the search stops.
    max_len:    the most tokens an output may have, eos included (≥ 1).
    alpha:      the length penalty's exponent (0 ranks by plain log-probability).

    Returns (tokens, score):
        tokens:  the best finished hypothesis as a list of ints, without bos and without eos.
        score:   its log-probability (eos included) divided by length_penalty(len(tokens) + 1, alpha).
    """
    live = [([], 0.0)]  # (tokens after bos, summed log-probability)
    finished = []  # (tokens without eos, score)
    for t in range(1, max_len + 1):
        candidates = []
        for tokens, logprob in live:
            logp = step([bos, *tokens]).tolist()  # (V,) log-probabilities of the next token
            for token in range(len(logp)):
                if (t < max_len) == (token != eos):  # eos only at the end
                    candidates.append(([*tokens, token], logprob + logp[token]))
        candidates.sort(key=lambda candidate: candidate[1], reverse=True)
        for tokens, logprob in candidates[:beam_size]:
            if tokens[-1] == eos and len(finished) < beam_size:
                finished.append((tokens[:-1], logprob / length_penalty(len(tokens), alpha)))  # n counts eos
        live = [candidate for candidate in candidates if candidate[0][-1] != eos][:beam_size]
        if len(finished) >= beam_size:
            break
    return max(finished, key=lambda hypothesis: hypothesis[1])


# ---- try it ------------------------------------------------------------------------------------------

if __name__ == "__main__":
    step, bos, eos = toy_model(seed=32)  # a model where alpha changes the best output, and beam 3 can miss it
    for alpha in (0.0, 0.6, 1.5):
        print(f"alpha {alpha}: greedy (beam 1)", beam_search(step, bos, eos, 1, 4, alpha))
        print(f"alpha {alpha}: beam 3        ", beam_search(step, bos, eos, 3, 4, alpha))
        print(f"alpha {alpha}: beam 85       ", beam_search(step, bos, eos, 85, 4, alpha), "(all 85 outputs)")
        print(f"alpha {alpha}: brute force   ", brute_force(step, bos, eos, 5, 4, alpha))
