"""Every exercise, the same three promises: kqv's reference file passes every check (the end-to-end one included),
the untouched skeleton reports every check as not implemented (never a traceback), and each known mistake fails
at the check it names with the hint it names.

A mistake (tests/exercise/mistakes.py) is the reference with one thing broken, and says at which check it must be
caught and with which words of the hint. The checks before that one must pass, so a mistake is caught where a
learner would meet it, not by an earlier check that happens to fail too.
"""

from pathlib import Path

import pytest

from kqv.exercise import framework, registry
from tests.exercise.mistakes import MISTAKES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = {"1. Digits", "2. Attention", "3. GPT", "4. Translation"}


def learner_from(text: str, folder: Path, filename: str):
    path = folder / filename
    path.write_text(text, encoding="utf-8")
    return framework.load_learner(path)


@pytest.mark.parametrize("name", registry.ORDER)
def test_the_module_keeps_the_contract(name):
    exercise = registry.exercise(name)
    assert exercise.NAME == name and exercise.STEP in STEPS and exercise.TEACHES
    for text in (exercise.skeleton(), exercise.reference()):
        assert text.splitlines()[0] == f"# kqv exercise: {name}"
        assert f"kqv exercise check {exercise.FILENAME}" in text
        compile(text, exercise.FILENAME, "exec")
    names = [check.name for check in exercise.CHECKS]
    assert len(set(names)) == len(names)
    assert not registry.contract_problems(exercise)


@pytest.mark.parametrize("name", registry.ORDER)
def test_the_reference_passes_every_check(name, tmp_path):
    exercise = registry.exercise(name)
    outcomes = framework.run_checks(exercise.CHECKS, learner_from(exercise.reference(), tmp_path, exercise.FILENAME))
    assert [(o.check, o.status) for o in outcomes] == [(c.name, "pass") for c in exercise.CHECKS], outcomes
    assert all(o.seconds < (60 if c.slow else 1) for o, c in zip(outcomes, exercise.CHECKS, strict=True)), outcomes


@pytest.mark.parametrize("name", registry.ORDER)
def test_the_untouched_skeleton_is_not_implemented_at_every_check(name, tmp_path):
    exercise = registry.exercise(name)
    outcomes = framework.run_checks(exercise.CHECKS, learner_from(exercise.skeleton(), tmp_path, exercise.FILENAME))
    assert [o.status for o in outcomes] == ["not implemented"] * len(exercise.CHECKS), outcomes
    assert all("not implemented yet" in o.message for o in outcomes), outcomes


@pytest.mark.parametrize("name", registry.ORDER)
def test_at_least_five_mistakes_each_naming_a_real_check(name):
    exercise = registry.exercise(name)
    mistakes = [m for m in MISTAKES if m.exercise == name]
    assert len(mistakes) >= 5
    checks = {check.name for check in exercise.CHECKS}
    for m in mistakes:
        assert m.check in checks and m.hint, m.name
        assert m.text() != exercise.reference() and m.text().splitlines()[0] == f"# kqv exercise: {name}"


@pytest.mark.parametrize("m", MISTAKES, ids=lambda m: f"{m.exercise}/{m.name}")
def test_a_mistake_fails_at_its_check_with_its_hint(m, tmp_path):
    exercise = registry.exercise(m.exercise)
    upto = [check.name for check in exercise.CHECKS].index(m.check)
    outcomes = framework.run_checks(exercise.CHECKS[: upto + 1], framework.load_learner(m.write(tmp_path)))
    assert [o.status for o in outcomes[:upto]] == ["pass"] * upto, outcomes
    caught = outcomes[upto]
    assert caught.status == "fail", caught
    assert m.hint in caught.hint, caught
