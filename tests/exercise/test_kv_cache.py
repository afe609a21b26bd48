"""The kv-cache exercise: its reference passes every check, its skeleton none (each "not implemented"), and each
known mistake (tests/exercise/mistakes.py: the reference with one thing broken) fails at the check its
`# expect:` line names, with the hint it names."""

from pathlib import Path

import pytest

from kqv.exercise import framework
from kqv.exercise.exercises import kv_cache as exercise

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def learner_from(text: str, tmp_path: Path, name: str = "learner"):
    path = tmp_path / exercise.FILENAME
    path.write_text(text)
    return framework.load_learner(path, name)


def test_the_files_given_part_is_the_checkers_model(tmp_path):
    """The checker runs its own copy of the model: the same weights and logits as the learner's file."""
    learner = learner_from(exercise.skeleton(), tmp_path)
    tokens = [3, 1, 4, 1, 5, 9, 2, 6]
    theirs, ours = learner.make_model(5), exercise.GIVEN.make_model(5)
    assert (learner.full_forward(theirs, tokens) == exercise.GIVEN.full_forward(ours, tokens)).all()


def test_each_known_mistake_differs_from_the_reference():
    """The mistakes the hints name all change the logits (else a hint could name a harmless variant)."""
    model, tokens = exercise.model_for_checks(), exercise.random_tokens(12, seed=2)
    right, _ = exercise.reference_run(model, tokens)
    for mistake in exercise.VALUE_MISTAKES:
        wrong, _ = exercise.reference_run(model, tokens, mistake)
        assert not framework.close(wrong, right, exercise.RTOL, exercise.ATOL), mistake
