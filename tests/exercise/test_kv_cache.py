"""The kv-cache exercise: its reference passes every check, its skeleton none (each "not implemented"), and each
known mistake (tests/exercise/mistakes/kv_cache/, the reference with one thing broken) fails at the check its
`# expect:` line names, with the hint it names."""

import ast
from pathlib import Path

import pytest

from kqv.exercise import framework
from kqv.exercise.exercises import kv_cache as exercise

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MISTAKES = sorted((Path(__file__).parent / "mistakes" / "kv_cache").glob("*.py"))


def learner_from(text: str, tmp_path: Path, name: str = "learner"):
    path = tmp_path / exercise.FILENAME
    path.write_text(text)
    return framework.load_learner(path, name)


def expectation(path: Path) -> tuple[str, str]:
    """'# expect: <check> | <hint substring>' -> (check, hint substring)."""
    line = next(line for line in path.read_text().splitlines() if line.startswith("# expect:"))
    check, hint = line.removeprefix("# expect:").split("|")
    return check.strip(), hint.strip()


def test_the_module_keeps_the_exercise_contract():
    assert exercise.NAME == "kv-cache" and exercise.STEP == "3. GPT" and exercise.FILENAME == "kv_cache.py"
    for text in (exercise.skeleton(), exercise.reference()):
        assert text.splitlines()[0] == "# kqv exercise: kv-cache"
        assert "kqv exercise check kv_cache.py" in text
        ast.parse(text)
    names = [c.name for c in exercise.CHECKS]
    assert len(set(names)) == len(names)
    assert [c.slow for c in exercise.CHECKS][-1] and not any(c.slow for c in exercise.CHECKS[:-1])


def test_the_reference_passes_every_check_quickly(tmp_path):
    outcomes = framework.run_checks(exercise.CHECKS, learner_from(exercise.reference(), tmp_path))
    assert [(o.check, o.status, o.message) for o in outcomes] == [(c.name, "pass", "") for c in exercise.CHECKS]
    limits = {c.name: 30.0 if c.slow else 1.0 for c in exercise.CHECKS}
    assert all(o.seconds < limits[o.check] for o in outcomes)


def test_the_untouched_skeleton_is_not_implemented_everywhere(tmp_path):
    outcomes = framework.run_checks(exercise.CHECKS, learner_from(exercise.skeleton(), tmp_path))
    assert [o.status for o in outcomes] == ["not implemented"] * len(exercise.CHECKS)


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


@pytest.mark.parametrize("path", MISTAKES, ids=[p.stem for p in MISTAKES])
def test_a_known_mistake_fails_where_expected_with_its_hint(path, tmp_path):
    check, hint = expectation(path)
    outcomes = framework.run_checks(exercise.CHECKS, framework.load_learner(path, f"mistake_{path.stem}"))
    failed = [o for o in outcomes if o.status != "pass"]
    assert failed, "every check passed"
    first = failed[0]
    assert (first.check, first.status) == (check, "fail"), (first.message, first.hint)
    assert hint in first.hint, (first.message, first.expected, first.got, first.hint)
    assert first.expected and first.got


def test_there_are_enough_mistakes():
    assert len(MISTAKES) >= 5
