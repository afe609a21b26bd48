"""The beam-search exercise: its reference passes every check, its skeleton none (each "not implemented"), and each
known mistake (tests/exercise/mistakes.py: the reference with one thing broken) fails at the check its
`# expect:` line names, with the hint it names."""

from pathlib import Path

import pytest

from kqv.exercise import framework
from kqv.exercise.exercises import beam_search as exercise
from kqv.generate.beam import length_penalty as kqv_length_penalty

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def learner_from(text: str, tmp_path: Path, name: str = "learner"):
    path = tmp_path / exercise.FILENAME
    path.write_text(text)
    return framework.load_learner(path, name)


def test_the_files_given_part_is_the_checkers(tmp_path):
    """The checker's length penalty and brute force are the file's, and the penalty is kqv's."""
    learner = learner_from(exercise.skeleton(), tmp_path)
    for n, alpha in ((1, 0.6), (3, 1.0), (7, 1.5), (4, 0.0)):
        assert learner.length_penalty(n, alpha) == exercise.length_penalty(n, alpha) == kqv_length_penalty(n, alpha)
    step, bos, eos = learner.toy_model()
    assert learner.brute_force(step, bos, eos, 5, 3, 0.6) == exercise.brute_force(step, bos, eos, 5, 3, 0.6)


def test_the_reference_is_kqvs_algorithm_and_the_brute_force_is_exhaustive():
    """On the brute-force models a beam of 85 is exhaustive (nothing pruned), and alpha changes the answer."""
    answers = {}
    for model, beam, max_len, alpha in exercise.settings("brute force"):
        best = exercise.brute_force(model, model.bos, model.eos, model.vocab, max_len, alpha)
        assert exercise.same(exercise.reference_result(model, beam, max_len, alpha), best)
        answers.setdefault(model.seed, []).append(tuple(best[0]))
    assert any(a[0] != a[1] for a in answers.values()) and any(a[1] != a[2] for a in answers.values())


def test_each_known_mistake_is_caught_by_some_check():
    """Every mistake the hints name changes the result somewhere (else a hint could name a harmless variant)."""
    caught = set().union(*(exercise.caught_by(c.name) for c in exercise.CHECKS))
    assert caught == set(exercise.MISTAKES)
