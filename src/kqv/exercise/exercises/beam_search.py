"""Exercise beam-search: beam search with GNMT's length penalty over any step function, kqv's algorithm exactly.

The learner writes one function,

    beam_search(step, bos, eos, beam_size, max_len, alpha) -> (tokens, score)
    step(prefix: list[int], bos first) -> log-probabilities (V,), a float64 torch tensor
    tokens: without bos and eos; score = log P(tokens + eos) / lp(len(tokens) + 1), lp(n) = ((5 + n) / 6) ** alpha

following kqv.generate.beam.beam_search step for step (the file's docstring spells it out): the best
beam_size candidates that end in eos finish, the best beam_size that do not stay live, the search stops
when beam_size have finished, and at step max_len only eos may follow (max_len counts eos, as kqv's
length limits do).

The checks hand the learner made-up models (`MadeUpModel`: log-probabilities drawn from a generator
seeded by the prefix) wrapped in `Watched`, which stops the search with a hint the moment it calls step
on a prefix it should never reach (after eos, past max_len, more than beam_size at one length). Results
are compared with greedy decoding, a brute force over every output, this module's reference
(`mistaken_beam_search(…, mistake=None)`) and, slowly, kqv's own beam search on a tiny Transformer; a
wrong result is matched against what each known mistake returns on the same model, which names the hint.
"""

import math
from contextlib import contextmanager
from functools import cache

import numpy as np
import torch

from kqv.config import TransformerConfig
from kqv.exercise.framework import Check, Failure, call, describe, first_hint
from kqv.generate.beam import beam_search as kqv_beam_search
from kqv.models.transformer import Transformer

NAME = "beam-search"
STEP = "4. Translation"
TEACHES = "beam search: keep the best partial translations, set finished ones aside, rank them by GNMT's score"
FILENAME = "beam_search.py"
SOLUTION = ["src/kqv/generate/beam.py: beam_search", "src/kqv/generate/beam.py: length_penalty"]

HEADER = '''# kqv exercise: beam-search
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

'''

GIVEN_SOURCE = '''
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
'''

SIGNATURE = '''

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
'''

TODO = """    raise NotImplementedError  # about 20 lines: the five steps above
"""

SOLUTION_BODY = """    live = [([], 0.0)]  # (tokens after bos, summed log-probability)
    finished = []  # (tokens without eos, score)
    for t in range(1, max_len + 1):
        candidates = []
        for tokens, logprob in live:
            logp = step([bos, *tokens]).tolist()  # (V,) log-probabilities of the next token
            for token in range(len(logp)):
                if t < max_len or token == eos:  # at the last place only eos may follow
                    candidates.append(([*tokens, token], logprob + logp[token]))
        candidates.sort(key=lambda candidate: candidate[1], reverse=True)
        for tokens, logprob in candidates[:beam_size]:
            if tokens[-1] == eos and len(finished) < beam_size:
                finished.append((tokens[:-1], logprob / length_penalty(len(tokens), alpha)))  # n counts eos
        live = [candidate for candidate in candidates if candidate[0][-1] != eos][:beam_size]
        if len(finished) >= beam_size:
            break
    return max(finished, key=lambda hypothesis: hypothesis[1])
"""

DEMO = """

# ---- try it ------------------------------------------------------------------------------------------

if __name__ == "__main__":
    step, bos, eos = toy_model(seed=32)  # a model where alpha changes the best output, and beam 3 can miss it
    for alpha in (0.0, 0.6, 1.5):
        print(f"alpha {alpha}: greedy (beam 1)", beam_search(step, bos, eos, 1, 4, alpha))
        print(f"alpha {alpha}: beam 3        ", beam_search(step, bos, eos, 3, 4, alpha))
        print(f"alpha {alpha}: beam 85       ", beam_search(step, bos, eos, 85, 4, alpha), "(all 85 outputs)")
        print(f"alpha {alpha}: brute force   ", brute_force(step, bos, eos, 5, 4, alpha))
"""


def skeleton() -> str:
    return HEADER + GIVEN_SOURCE + SIGNATURE + TODO + DEMO


def reference() -> str:
    return HEADER + GIVEN_SOURCE + SIGNATURE + SOLUTION_BODY + DEMO


def given_code() -> dict:
    """The learner file's given part (length_penalty, toy_model, brute_force), run here."""
    namespace: dict = {}
    exec(
        compile("import itertools\nimport numpy as np\nimport torch\n" + GIVEN_SOURCE, "<beam-search>", "exec"),
        namespace,
    )
    return namespace


GIVEN = given_code()
length_penalty, brute_force = GIVEN["length_penalty"], GIVEN["brute_force"]

# ---- models for the checks ---------------------------------------------------------------------------


class MadeUpModel:
    """A made-up decoder: step(prefix) -> log-probabilities (vocab,), float64, fixed for each prefix.

    Tokens 0 … vocab − 1, eos = 0, bos = vocab (never an output). Logits are 2 · N(0, 1), drawn from a
    generator seeded by (seed, *prefix); `script[i]` (if any) gets `boost` more as the i-th new token, and
    eos gets `eos_bias` more everywhere (very negative: outputs run to max_len)."""

    def __init__(self, vocab: int, seed: int, *, script=(), boost: float = 0.0, eos_bias: float = 0.0) -> None:
        self.vocab, self.seed, self.script, self.boost, self.eos_bias = vocab, seed, list(script), boost, eos_bias
        self.bos, self.eos = vocab, 0

    def __call__(self, prefix: list[int]) -> torch.Tensor:
        logits = 2.0 * np.random.default_rng([self.seed, *prefix]).standard_normal(self.vocab)
        place = len(prefix) - 1
        if place < len(self.script):
            logits[self.script[place]] += self.boost
        logits[self.eos] += self.eos_bias
        return torch.from_numpy(logits - np.logaddexp.reduce(logits))


WATCH_HINTS = {
    "bos": "call step([bos, *tokens]): every prefix starts with bos",
    "after eos": "finished hypotheses keep growing after </s>: a hypothesis that ends in eos is set aside, "
    "never extended",
    "too long": "hypotheses grow past max_len: max_len counts eos, so at step max_len only eos may follow",
    "too many": "more than beam_size hypotheses are live at once: rank the children of all live hypotheses "
    "together and keep the best beam_size overall (not every child, nor the best of each parent)",
}


class Watched:
    """A step function as the learner sees it: raises a Failure with a hint at a prefix beam search never
    asks for (not starting with bos, going on after eos, longer than max_len, a (beam_size + 1)-th of one
    length)."""

    def __init__(self, model, beam_size: int, max_len: int) -> None:
        self.model, self.beam_size, self.max_len = model, beam_size, max_len
        self.bos, self.eos = model.bos, model.eos
        self.seen: dict[int, set] = {}  # prefix length -> the distinct prefixes asked for

    def __call__(self, prefix) -> torch.Tensor:
        try:
            prefix = [int(token) for token in prefix]
        except (TypeError, ValueError):
            raise Failure("step() should be given a list of ints", "[bos, *tokens]", describe(prefix)) from None
        if not prefix or prefix[0] != self.bos:
            raise Failure(f"step() was given the prefix {prefix}", f"[{self.bos}, …] (bos first)", f"{prefix}",
                          WATCH_HINTS["bos"])  # fmt: skip
        if self.eos in prefix:
            raise Failure(
                f"step() was asked to continue {prefix}, which has already ended", "no prefix holding eos",
                f"{prefix}", WATCH_HINTS["after eos"],
            )  # fmt: skip
        if len(prefix) > self.max_len:
            raise Failure(
                f"step() was asked to continue {prefix}, {len(prefix) - 1} tokens long, with max_len = {self.max_len}",
                f"prefixes of at most bos + {self.max_len - 1} tokens", f"{len(prefix) - 1} tokens",
                WATCH_HINTS["too long"],
            )  # fmt: skip
        same_length = self.seen.setdefault(len(prefix), set())
        same_length.add(tuple(prefix))
        if len(same_length) > self.beam_size:
            raise Failure(
                f"step() was asked to continue {len(same_length)} different hypotheses of {len(prefix) - 1} tokens "
                f"with beam_size = {self.beam_size}",
                f"at most {self.beam_size} live hypotheses", f"{len(same_length)}", WATCH_HINTS["too many"],
            )  # fmt: skip
        return self.model(prefix)


# ---- the reference and the known mistakes ------------------------------------------------------------

MISTAKES = {
    "lp before the token": "the length penalty uses the length before this token: n counts the eos that ends the "
    "hypothesis, n = len(tokens) + 1 (bos not counted)",
    "lp counts bos": "n counts bos too: it is the output's length with eos and without bos, len(tokens) + 1",
    "penalty at every step": "the length penalty is applied at every step, to a running score that already holds "
    "it: keep each live hypothesis's summed log-probability and divide by length_penalty(n, alpha) once, when it "
    "finishes",
    "best by log-prob": "the best hypothesis is picked by its log-probability: pick the finished one with the best "
    "score, log P / length_penalty(n, alpha), so that alpha matters",
    "multiplied log-probs": "the log-probabilities are multiplied: they add up, log P(a, b) = log P(a) + "
    "log P(b | a), starting from 0.0",
    "added probabilities": "the probabilities are added: add log-probabilities instead (a sequence's probability "
    "is the product of its tokens')",
    "no penalty": "the score is the plain log-probability: divide it by length_penalty(n, alpha), n = len(tokens) + 1",
    "eos never allowed": "eos is never allowed before the last step: a hypothesis ends whenever eos is among the "
    "best beam_size candidates",
    "no eos at the limit": "at step max_len only eos may follow: max_len counts eos, so every hypothesis still live "
    "then ends there",
    "live shrinks": "the live beam shrinks when hypotheses finish: the next live hypotheses are the best beam_size "
    "candidates that do not end in eos, wherever they rank",
    "stops at the first finished": "the search stops at the first finished hypothesis: go on until beam_size "
    "hypotheses have finished",
}


def mistaken_beam_search(step, bos, eos, beam_size, max_len, alpha, mistake: str | None = None):
    """The reference beam search (mistake None), or with one of MISTAKES made -> (tokens, score).

    Raises ValueError where the mistaken search finishes nothing (as a learner's max() of nothing would)."""
    start = 1.0 if mistake == "multiplied log-probs" else 0.0
    live = [([], start)]  # (tokens, running value: summed log-prob, or what the mistake keeps)
    finished = []  # (tokens without eos, log-prob, score)
    for t in range(1, max_len + 1):
        candidates = []
        for tokens, value in live:
            logp = step([bos, *tokens]).tolist()
            for token, lp in enumerate(logp):
                if t == max_len and token != eos and mistake != "no eos at the limit":
                    continue
                if token == eos and t < max_len and mistake == "eos never allowed":
                    continue
                n = len(tokens) + 1
                new = {
                    "multiplied log-probs": value * lp,
                    "added probabilities": value + math.exp(lp),
                    "penalty at every step": (value + lp) / length_penalty(n, alpha),
                }.get(mistake, value + lp)
                candidates.append(([*tokens, token], new))
        candidates.sort(key=lambda c: c[1], reverse=True)
        for tokens, value in candidates[:beam_size]:
            if tokens[-1] == eos and len(finished) < beam_size:
                n = len(tokens) + {"lp before the token": -1, "lp counts bos": 1}.get(mistake, 0)
                if mistake in ("penalty at every step", "no penalty"):
                    score = value
                else:
                    score = value / length_penalty(n, alpha)
                finished.append((tokens[:-1], value, score))
        if mistake == "live shrinks":
            live = [c for c in candidates[:beam_size] if c[0][-1] != eos]
        else:
            live = [c for c in candidates if c[0][-1] != eos][:beam_size]
        if len(finished) >= beam_size or not live or (mistake == "stops at the first finished" and finished):
            break
    if not finished:
        raise ValueError("no hypothesis finished")
    best = max(finished, key=(lambda f: f[1]) if mistake == "best by log-prob" else (lambda f: f[2]))
    return best[0], best[2]


def greedy(step, bos, eos, max_len, alpha) -> tuple[list[int], float]:
    """The likeliest token each step (eos at step max_len) -> (tokens, log P / lp(len(tokens) + 1))."""
    tokens, logprob = [], 0.0
    for t in range(1, max_len + 1):
        logp = step([bos, *tokens])
        token = eos if t == max_len else int(logp.argmax())
        logprob += float(logp[token])
        if token == eos:
            break
        tokens.append(token)
    return tokens, logprob / length_penalty(len(tokens) + 1, alpha)


# ---- running the learner's search --------------------------------------------------------------------


def read_result(result) -> tuple[list[int], float]:
    """The learner's (tokens, score) as (list of ints, float), or a Failure saying what came back instead."""
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise Failure("beam_search should return a pair (tokens, score)", "(list of ints, float)", describe(result),
                      "return the best finished hypothesis as (tokens, score)")  # fmt: skip
    tokens, score = result
    if isinstance(result, list) and all(isinstance(x, int) for x in result):
        raise Failure("beam_search should return a pair (tokens, score)", "(list of ints, float)", f"{result}",
                      "return the tokens and the score, (tokens, score), not the tokens alone")  # fmt: skip
    if torch.is_tensor(tokens) or isinstance(tokens, np.ndarray):
        tokens = tokens.tolist()
    try:
        as_ints = [int(token) for token in tokens]
        whole = all(a == token for a, token in zip(as_ints, tokens, strict=True))
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise Failure("the tokens should be a list of ints", "list of ints", describe(result[0]),
                      "keep the tokens as a list of ints, the ids after bos")  # fmt: skip
    try:
        score = float(score)
    except (TypeError, ValueError, RuntimeError):
        raise Failure("the score should be a number", "float", describe(score), "return the score as a float") from None
    return as_ints, score


def same(got: tuple[list[int], float], expected: tuple[list[int], float]) -> bool:
    return got[0] == expected[0] and math.isclose(got[1], expected[1], rel_tol=1e-7, abs_tol=1e-9)


def show(result: tuple[list[int], float]) -> str:
    return f"tokens {result[0]}, score {result[1]:.6f}"


def run_learner(learner, model, beam_size: int, max_len: int, alpha: float) -> tuple[list[int], float]:
    step = Watched(model, beam_size, max_len)
    return read_result(call(learner, "beam_search", step, model.bos, model.eos, beam_size, max_len, alpha))


def scripted_model() -> MadeUpModel:
    """3, 4, eos is by far the likeliest output."""
    return MadeUpModel(6, seed=11, script=[3, 4, 0], boost=5.0)


def eos_first_model() -> MadeUpModel:
    """eos is the likeliest first token by far: eos alone is the best output."""
    return MadeUpModel(6, seed=5, script=[0], boost=4.0)


BRUTE_FORCE_SEEDS = (22, 4)  # with eos_bias −2: alpha 0, 0.6 and 1.5 give 3 answers (22), 0 and 0.6 two (4)
BRUTE_FORCE_BEAM = 85  # 1 + 4 + 16 + 64: every output of ≤ 4 tokens over 5 (eos included), all kept
NARROW = ((20, 4, 1.5), (39, 4, 1.5), (21, 2, 0.6), (23, 3, 0.0))  # (seed, beam_size, alpha), eos_bias −1


def settings(check: str) -> list[tuple]:
    """The (model, beam_size, max_len, alpha) runs of a check on made-up models, in order."""
    if check in ("result", "score"):
        return [(scripted_model(), 2, 6, alpha) for alpha in ((0.0,) if check == "result" else (0.0, 1.0))]
    if check == "greedy":
        return [(MadeUpModel(6, seed=seed), 1, 7, alpha) for seed in (1, 2, 3) for alpha in (0.0, 0.6)]
    if check == "eos first":
        return [(eos_first_model(), 3, 5, alpha) for alpha in (0.0, 0.6)]
    if check == "length limit":  # eos almost never comes before it must
        return [(MadeUpModel(6, seed=8, eos_bias=-8.0), 2, 4, 0.6)]
    if check == "brute force":
        return [(MadeUpModel(5, seed=seed, eos_bias=-2.0), BRUTE_FORCE_BEAM, 4, alpha)
                for seed in BRUTE_FORCE_SEEDS for alpha in (0.0, 0.6, 1.5)]  # fmt: skip
    if check == "narrow beams":
        return [(MadeUpModel(7, seed=seed, eos_bias=-1.0), beam, 6, alpha) for seed, beam, alpha in NARROW]
    return []


def reference_result(model, beam_size: int, max_len: int, alpha: float, mistake: str | None = None):
    """mistaken_beam_search on a model -> (tokens, score), or None where it finishes nothing."""
    try:
        return mistaken_beam_search(model, model.bos, model.eos, beam_size, max_len, alpha, mistake)
    except ValueError:
        return None


@cache
def caught_by(check: str) -> frozenset:
    """The mistakes whose result differs from the reference's in some run of `check`."""
    runs = settings(check)
    return frozenset(
        m for m in MISTAKES
        if any(reference_result(*run, m) is None or not same(reference_result(*run, m), reference_result(*run))
               for run in runs)
    )  # fmt: skip


def agree(a, b) -> bool:
    """Two outcomes, (tokens, score) or None (raised, or finished nothing), are the same."""
    return (a is None) == (b is None) and (a is None or same(a, b))


def mistake_hints(check: str, runs: list[tuple], outcomes: list) -> list:
    """(does the learner's outcome equal mistake m's in every run?, its hint) for each mistake m; those that the
    checks before `check` would have caught come last: a learner who got this far has not made them."""
    names = [c.name for c in CHECKS]
    earlier = set().union(*(caught_by(c) for c in names[: names.index(check)]))
    order = [m for m in MISTAKES if m not in earlier] + [m for m in MISTAKES if m in earlier]

    def matches(mistake: str) -> bool:
        return all(agree(got, reference_result(*run, mistake)) for run, got in zip(runs, outcomes, strict=True))

    return [(lambda m=m: matches(m), MISTAKES[m]) for m in order]


def expect_results(learner, check: str, cases: list[tuple], extra_hints=()) -> None:
    """cases: (run, expected, what). The learner's search on every run, then a Failure at the first wrong one; its
    hint names the mistake that gives all the learner's outcomes (else the wrong one alone)."""
    outcomes, raised = [], {}
    for i, (run, _, _) in enumerate(cases):
        try:
            outcomes.append(run_learner(learner, *run))
        except Failure as failure:
            if not failure.message.startswith("beam_search() raised"):
                raise  # a result of the wrong form, or a prefix beam search never asks for: said already
            outcomes.append(None)
            raised[i] = failure
    runs = [run for run, _, _ in cases]
    for i, ((run, expected, what), got) in enumerate(zip(cases, outcomes, strict=True)):
        if got is not None and same(got, expected):
            continue
        hints = [*extra_hints, *mistake_hints(check, runs, outcomes), *mistake_hints(check, [run], [got])]
        hint = first_hint(hints)
        if got is None:
            failure = raised[i]
            failure.expected, failure.got, failure.hint = show(expected), "an exception", failure.hint or hint
            raise failure
        if not hint and got[0] == expected[0]:
            hint = f"the right tokens, the wrong score: score = log P / length_penalty({len(got[0]) + 1}, {run[3]})"
        where = f"beam_size {run[1]}, max_len {run[2]}, alpha {run[3]}"
        raise Failure(f"{what} ({where}): beam_search returned another result", show(expected), show(got), hint)


# ---- the checks --------------------------------------------------------------------------------------


def check_result(learner) -> None:
    [(model, beam_size, max_len, alpha)] = settings("result")
    got = run_learner(learner, model, beam_size, max_len, alpha)
    expected = reference_result(model, beam_size, max_len, alpha)
    if got[0] == expected[0]:
        return
    tokens, bos, eos = got[0], model.bos, model.eos
    hints = [
        (lambda: tokens == [bos, *expected[0], eos], "leave bos and eos out of the tokens you return"),
        (lambda: tokens == [bos, *expected[0]], "leave bos out of the tokens you return: they start after it"),
        (lambda: tokens == [*expected[0], eos], "leave eos out of the tokens you return: tokens[:-1]"),
        *mistake_hints("result", settings("result"), [got]),
    ]
    raise Failure(
        f"the tokens of the one likely output, 3 4 eos (beam_size {beam_size}, max_len {max_len}, alpha {alpha})",
        f"{expected[0]}", f"{tokens}", first_hint(hints),
    )  # fmt: skip


def check_score(learner) -> None:
    what = "the score of 3 4 eos, log P / length_penalty(3, α)"
    expect_results(learner, "score", [(run, reference_result(*run), what) for run in settings("score")])


def check_greedy(learner) -> None:
    cases = [
        ((model, beam, max_len, alpha), greedy(model, model.bos, model.eos, max_len, alpha),
         f"beam 1 is greedy decoding (made-up model {model.seed})")
        for model, beam, max_len, alpha in settings("greedy")
    ]  # fmt: skip
    expect_results(learner, "greedy", cases)


def check_eos_first(learner) -> None:
    what = "a model whose best output is eos alone"
    expect_results(learner, "eos first", [(run, reference_result(*run), what) for run in settings("eos first")])


def check_length_limit(learner) -> None:
    [run] = settings("length limit")
    too_long = (lambda: False, "")
    try:
        tokens, _ = run_learner(learner, *run)
        too_long = (lambda: len(tokens) >= run[2], MISTAKES["no eos at the limit"])
    except Failure:
        pass  # expect_results says what the learner's search raised, and recognises the mistake
    what = "a model that almost never says eos"
    expect_results(learner, "length limit", [(run, reference_result(*run), what)], [too_long])


def check_brute_force(learner) -> None:
    cases = [
        ((model, beam, max_len, alpha), brute_force(model, model.bos, model.eos, model.vocab, max_len, alpha),
         f"a beam as wide as the {beam} possible outputs finds the brute-force best (model {model.seed})")
        for model, beam, max_len, alpha in settings("brute force")
    ]  # fmt: skip
    expect_results(learner, "brute force", cases)


def check_narrow_beams(learner) -> None:
    cases = [(run, reference_result(*run), f"made-up model {run[0].seed}") for run in settings("narrow beams")]
    expect_results(learner, "narrow beams", cases)


# ---- against kqv's own beam search -------------------------------------------------------------------

PAD, BOS, EOS = 0, 1, 2  # kqv's special ids


@cache
def tiny_translator() -> Transformer:
    """An untrained encoder–decoder (random weights, float64): its outputs are varied, and far from uniform."""
    config = TransformerConfig(vocab_size=12, max_len=16, n_layer_enc=1, n_layer_dec=1, n_head=2, n_embd=16,
                               d_ff=32, dropout=0.0)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return Transformer(config).double().eval()


def sources(n: int = 6) -> list[torch.Tensor]:
    """n source sentences (1, S) of 1–6 words and eos."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        words = torch.randint(3, 12, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g)
        out.append(torch.cat([words, torch.tensor([EOS])])[None])
    return out


class TranslatorStep:
    """step(prefix) for one source sentence: the decoder's log-probabilities after the prefix (recomputed each
    time, no cache), float64, −inf at pad and bos, as kqv.generate.beam.next_logprobs gives them."""

    bos, eos = BOS, EOS

    def __init__(self, model: Transformer, src: torch.Tensor) -> None:
        self.model, self.src = model, src

    @torch.no_grad()
    def __call__(self, prefix: list[int]) -> torch.Tensor:
        logits = self.model(self.src, torch.tensor([prefix])).logits[0, -1].double()
        logp = torch.log_softmax(logits, dim=-1)
        logp[[PAD, BOS]] = float("-inf")
        return logp


@contextmanager
def one_thread():
    """Tiny forward passes run fastest on one thread (several, on a busy machine, can be 20× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_kqv(learner) -> None:
    with one_thread():
        compare_with_kqv(learner)


def compare_with_kqv(learner) -> None:
    model, beam_size, alpha, max_len = tiny_translator(), 3, 0.6, 6
    cases = []
    for i, src in enumerate(sources()):
        [hyp] = kqv_beam_search(model, src, beam=beam_size, alpha=alpha, max_len_a=0.0, max_len_b=max_len)
        run = (TranslatorStep(model, src), beam_size, max_len, alpha)
        cases.append((run, (hyp.tokens, hyp.score), f"kqv's beam search on a tiny Transformer, sentence {i}"))
    expect_results(learner, "kqv", cases)


CHECKS: list[Check] = [
    Check("result", "on a model whose likeliest output is 3 4 eos: tokens [3, 4], no bos, no eos", check_result),
    Check("score", "its score is log P(3 4 eos) / length_penalty(3, α), at α 0 and 1", check_score),
    Check("greedy", "beam_size 1 is greedy decoding, on three made-up models", check_greedy),
    Check(
        "eos first",
        "when eos alone is the best output it wins, and an ended hypothesis is never extended",
        check_eos_first,
    ),  # fmt: skip
    Check(
        "length limit", "a model that never says eos: outputs stop at max_len tokens, eos included", check_length_limit
    ),  # fmt: skip
    Check(
        "brute force",
        "a beam as wide as the output space finds the brute-force best at α 0, 0.6, 1.5",
        check_brute_force,
    ),  # fmt: skip
    Check("narrow beams", "beams of 2–4 on made-up models: kqv's algorithm step for step", check_narrow_beams),
    Check(
        "kqv", "the same tokens and scores as kqv.generate.beam.beam_search on a tiny Transformer", check_kqv, slow=True
    ),  # fmt: skip
]
