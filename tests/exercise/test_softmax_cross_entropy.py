"""The softmax-cross-entropy exercise: reference passes, skeleton is "not implemented", known mistakes are caught."""

from kqv.exercise.exercises import softmax_cross_entropy as exercise
from kqv.exercise.framework import load_learner, run_checks


def learner_of(tmp_path, text: str):
    path = tmp_path / exercise.FILENAME
    path.write_text(text, encoding="utf-8")
    return load_learner(path)


def test_each_function_written_unlocks_its_own_checks(tmp_path):
    """Only softmax written: the checks of softmax alone pass, the loss's and the gradient's are not implemented."""
    solved = exercise.reference()
    loss_start = solved.index("def cross_entropy(z, labels):")
    text = solved[:loss_start] + exercise.skeleton()[exercise.skeleton().index("def cross_entropy(z, labels):") :]
    outcomes = {o.check: o.status for o in run_checks(exercise.CHECKS, learner_of(tmp_path, text))}
    assert outcomes["rows sum to 1"] == outcomes["softmax values"] == "pass"
    assert outcomes["shapes"] == outcomes["loss values"] == outcomes["gradient"] == "not implemented"
