"""The softmax-cross-entropy exercise: reference passes, skeleton is "not implemented", known mistakes are caught."""

import warnings
from pathlib import Path

import pytest

from kqv.exercise.exercises import softmax_cross_entropy as exercise
from kqv.exercise.framework import load_learner, run_checks
from kqv.exercise.registry import contract_problems, todo_functions
from tests.exercise.test_backprop import expectation

MISTAKES = sorted((Path(__file__).parent / "mistakes" / "softmax_cross_entropy").glob("*.py"))


def learner_of(tmp_path, text: str):
    path = tmp_path / exercise.FILENAME
    path.write_text(text, encoding="utf-8")
    return load_learner(path)


def test_the_module_keeps_the_contract():
    assert contract_problems(exercise) == []
    assert exercise.NAME == "softmax-cross-entropy" and exercise.FILENAME == "softmax_cross_entropy.py"
    assert todo_functions(exercise.skeleton()) == ["softmax", "cross_entropy", "cross_entropy_gradient"]


def test_the_reference_passes_every_check(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no overflow or divide-by-zero warnings on the way
        outcomes = run_checks(exercise.CHECKS, learner_of(tmp_path, exercise.reference()))
    assert [(o.check, o.status) for o in outcomes] == [(c.name, "pass") for c in exercise.CHECKS], outcomes


def test_the_untouched_skeleton_is_not_implemented_at_every_check(tmp_path):
    outcomes = run_checks(exercise.CHECKS, learner_of(tmp_path, exercise.skeleton()))
    assert {o.status for o in outcomes} == {"not implemented"}


def test_each_function_written_unlocks_its_own_checks(tmp_path):
    """Only softmax written: the checks of softmax alone pass, the loss's and the gradient's are not implemented."""
    solved = exercise.reference()
    loss_start = solved.index("def cross_entropy(z, labels):")
    text = solved[:loss_start] + exercise.skeleton()[exercise.skeleton().index("def cross_entropy(z, labels):") :]
    outcomes = {o.check: o.status for o in run_checks(exercise.CHECKS, learner_of(tmp_path, text))}
    assert outcomes["rows sum to 1"] == outcomes["softmax values"] == "pass"
    assert outcomes["shapes"] == outcomes["loss values"] == outcomes["gradient"] == "not implemented"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the mistakes overflow, as they should
@pytest.mark.parametrize("path", MISTAKES, ids=lambda p: p.stem)
def test_each_mistake_fails_at_its_check_with_its_hint(path):
    check, hint = expectation(path)
    outcomes = run_checks(exercise.CHECKS, load_learner(path))
    first = next(o for o in outcomes if o.status != "pass")
    assert (first.check, first.status) == (check, "fail"), first
    assert hint in first.hint, first


def test_there_are_enough_mistakes():
    assert len(MISTAKES) >= 5
    checks = {expectation(p)[0] for p in MISTAKES}
    assert checks >= {"rows sum to 1", "huge logits", "gradient", "finite differences", "batch mean"}
