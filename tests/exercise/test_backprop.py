"""The backprop exercise: its reference passes, its skeleton is all "not implemented", each known mistake is caught."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kqv.exercise.exercises import backprop
from kqv.exercise.framework import load_learner, run_checks
from kqv.exercise.registry import contract_problems, todo_functions

MISTAKES = sorted((Path(__file__).parent / "mistakes" / "backprop").glob("*.py"))


def learner_of(tmp_path, text: str, name: str = "backprop.py"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_learner(path)


def expectation(path: Path) -> tuple[str, str]:
    """'# expect: CHECK | HINT' on the fixture's second line -> (CHECK, HINT)."""
    line = path.read_text(encoding="utf-8").splitlines()[1]
    check, hint = line.removeprefix("# expect:").split("|")
    return check.strip(), hint.strip()


def test_the_module_keeps_the_contract():
    assert contract_problems(backprop) == []
    assert backprop.skeleton().splitlines()[0] == "# kqv exercise: backprop"
    assert todo_functions(backprop.skeleton()) == ["Network.backprop", "Network.update_mini_batch"]
    assert todo_functions(backprop.reference()) == []
    assert [c.name for c in backprop.CHECKS] == ["shapes", "values", "finite differences", "update", "end to end"]


def test_the_reference_passes_every_check_including_end_to_end(tmp_path):
    outcomes = run_checks(backprop.CHECKS, learner_of(tmp_path, backprop.reference()))
    assert [(o.check, o.status) for o in outcomes] == [(c.name, "pass") for c in backprop.CHECKS], outcomes


def test_the_untouched_skeleton_is_not_implemented_at_every_check(tmp_path):
    outcomes = run_checks(backprop.CHECKS, learner_of(tmp_path, backprop.skeleton()))
    assert {o.status for o in outcomes} == {"not implemented"}
    assert outcomes[0].message == "backprop is not implemented yet"
    assert outcomes[3].message == "update_mini_batch is not implemented yet"


def test_the_mistakes_are_recognisable_and_the_correct_answer_is_kqvs():
    sizes = [4, 4, 4, 4]
    weights, biases = backprop.random_parameters(sizes, seed=3)
    x, y = backprop.random_batch(sizes, 3, seed=3)
    expected = backprop.reference_gradients(weights, biases, x, y)
    plain = backprop.mistaken_gradients(weights, biases, x, y, "none")
    numerical = backprop.numerical_gradients(weights, biases, x, y)
    for got in (plain, numerical):
        assert all(
            np.allclose(g, e, atol=1e-7) for g, e in zip(got[0] + got[1], expected[0] + expected[1], strict=True)
        )
    for mistake in ("sigma output", "sigma hidden", "sigma", "prime of a", "no output prime", "transposed W"):
        wrong = backprop.mistaken_gradients(weights, biases, x, y, mistake)
        assert not all(np.allclose(g, e) for g, e in zip(wrong[1], expected[1], strict=True)), mistake


@pytest.mark.parametrize("path", MISTAKES, ids=lambda p: p.stem)
def test_each_mistake_fails_at_its_check_with_its_hint(path):
    check, hint = expectation(path)
    slow = any(c.slow for c in backprop.CHECKS if c.name == check)
    outcomes = run_checks(backprop.CHECKS, load_learner(path), slow=slow)
    first = next(o for o in outcomes if o.status != "pass")
    assert (first.check, first.status) == (check, "fail"), first
    assert hint in first.hint, first
    assert first.message and "Traceback" not in first.message


def test_there_are_enough_mistakes():
    assert len(MISTAKES) >= 5
    assert {expectation(p)[0] for p in MISTAKES} >= {"shapes", "values", "update"}


def test_running_the_reference_file_trains_the_network(tmp_path):
    path = tmp_path / "backprop.py"
    path.write_text(backprop.reference(), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("epoch 30: test accuracy") and float(last.split()[-1]) >= 0.95
