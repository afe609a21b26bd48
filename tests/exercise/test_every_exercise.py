"""Every exercise, the same three promises: kqv's reference file passes every check (the end-to-end one included),
the untouched skeleton reports every check as not implemented (never a traceback), and each known mistake fails
at the check it names with the hint it names.

A mistake is a learner's file under mistakes/<exercise>/: the reference with one thing broken, whose header
`# expect: <check> | <hint substring>` says where it must be caught. The checks before that one must pass, so a
mistake is caught where a learner would meet it, not by an earlier check that happens to fail too.
"""

import re
from pathlib import Path

import pytest

from kqv.exercise import framework, registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HERE = Path(__file__).parent
STEPS = {"1. Digits", "2. Attention", "3. GPT", "4. Translation"}
EXPECT = re.compile(r"^# expect: (?P<check>[^|]+?) \| (?P<hint>.+)$", re.MULTILINE)
MISTAKES = [
    (name, path)
    for name in registry.ORDER
    for path in sorted((HERE / "mistakes" / name.replace("-", "_")).glob("*.py"))
]


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
    paths = [path for n, path in MISTAKES if n == name]
    assert len(paths) >= 5
    checks = {check.name for check in exercise.CHECKS}
    for path in paths:
        match = EXPECT.search(path.read_text(encoding="utf-8"))
        assert match and match["check"] in checks, path.name
        assert path.read_text(encoding="utf-8") != exercise.reference()


@pytest.mark.parametrize(("name", "path"), MISTAKES, ids=lambda x: x.stem if isinstance(x, Path) else x)
def test_a_mistake_fails_at_its_check_with_its_hint(name, path):
    exercise = registry.exercise(name)
    match = EXPECT.search(path.read_text(encoding="utf-8"))
    upto = [check.name for check in exercise.CHECKS].index(match["check"])
    outcomes = framework.run_checks(exercise.CHECKS[: upto + 1], framework.load_learner(path))
    assert [o.status for o in outcomes[:upto]] == ["pass"] * upto, outcomes
    caught = outcomes[upto]
    assert caught.status == "fail", caught
    assert match["hint"] in caught.hint, caught
