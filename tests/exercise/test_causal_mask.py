"""The causal-mask exercise: the reference passes every check, the skeleton none, and each known mistake is named.

Each file in mistakes/causal_mask/ is the reference with one thing broken; its header
`# expect: <check> | <hint substring>` names the check that must catch it and words of the hint.
"""

import re
from pathlib import Path

import pytest

from kqv.exercise import framework
from kqv.exercise.exercises import causal_mask as exercise

ROOT = Path(__file__).resolve().parents[2]
MISTAKES = sorted((Path(__file__).parent / "mistakes" / "causal_mask").glob("*.py"))
EXPECT = re.compile(r"^# expect: (?P<check>[^|]+?) \| (?P<hint>.+)$", re.MULTILINE)


def learner_from(text: str, tmp_path: Path):
    path = tmp_path / exercise.FILENAME
    path.write_text(text)
    return framework.load_learner(path)


def test_module_follows_the_exercise_contract():
    assert exercise.NAME == "causal-mask" and exercise.STEP == "2. Attention" and exercise.TEACHES
    assert exercise.skeleton().splitlines()[0] == f"# kqv exercise: {exercise.NAME}"
    assert exercise.reference().splitlines()[0] == f"# kqv exercise: {exercise.NAME}"
    assert f"kqv exercise check {exercise.FILENAME}" in exercise.skeleton()
    names = [check.name for check in exercise.CHECKS]
    assert len(set(names)) == len(names)
    for entry in exercise.SOLUTION:
        file, _, functions = entry.partition(": ")
        source = (ROOT / file).read_text()
        for function in functions.split(", "):
            assert f"def {function.split('.')[-1]}(" in source, entry


def test_reference_passes_every_check(tmp_path):
    outcomes = framework.run_checks(exercise.CHECKS, learner_from(exercise.reference(), tmp_path))
    assert [(o.check, o.status) for o in outcomes] == [(c.name, "pass") for c in exercise.CHECKS], outcomes
    assert all(o.seconds < 1 for o in outcomes), outcomes


def test_untouched_skeleton_is_not_implemented_everywhere(tmp_path):
    outcomes = framework.run_checks(exercise.CHECKS, learner_from(exercise.skeleton(), tmp_path))
    assert [o.status for o in outcomes] == ["not implemented"] * len(exercise.CHECKS), outcomes


def test_every_mistake_fixture_names_a_real_check():
    assert len(MISTAKES) >= 5
    names = {check.name for check in exercise.CHECKS}
    for path in MISTAKES:
        match = EXPECT.search(path.read_text())
        assert match and match["check"] in names, path.name


@pytest.mark.parametrize("path", MISTAKES, ids=lambda path: path.stem)
def test_mistake_fails_at_its_check_with_its_hint(path):
    match = EXPECT.search(path.read_text())
    names = [check.name for check in exercise.CHECKS]
    upto = names.index(match["check"])
    outcomes = framework.run_checks(exercise.CHECKS[: upto + 1], framework.load_learner(path))
    assert [o.status for o in outcomes[:upto]] == ["pass"] * upto, outcomes
    caught = outcomes[upto]
    assert caught.status == "fail", caught
    assert match["hint"] in caught.hint, caught
