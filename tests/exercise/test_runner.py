"""The checker's machinery: the registry, and check_file's child process with its limits, on misbehaving files.

Each check_file runs a real child process (~1-2 s), so the misbehaving files share the skeleton of one exercise."""

import json

import pytest

from kqv.errors import UserError
from kqv.exercise import registry, runner
from kqv.exercise.exercises import backprop
from kqv.exercise.framework import Check

FORWARD = "        zs, activations = [], [x]"  # the first line of the reference's backprop body


def learner_file(tmp_path, before_backprop: str = "", at_top: str = "", name: str = "backprop.py"):
    """The reference backprop file with lines put at the start of backprop's body and/or after the imports."""
    text = backprop.reference()
    text = text.replace(FORWARD, before_backprop + FORWARD, 1) if before_backprop else text
    text = text.replace("import numpy as np\n", "import numpy as np\n" + at_top, 1) if at_top else text
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def statuses(report) -> list[tuple[str, str]]:
    return [(o.check, o.status) for o in report.outcomes]


# --- registry -------------------------------------------------------------------------------------------------


def test_the_order_and_the_names():
    assert registry.ORDER == ["backprop", "softmax-cross-entropy", "attention", "causal-mask",
                              "positional-encoding", "multi-head", "kv-cache", "beam-search"]  # fmt: skip
    assert registry.exercise("backprop") is backprop
    assert registry.exercise("Softmax_Cross_Entropy").NAME == "softmax-cross-entropy"
    with pytest.raises(UserError, match="no exercise is called 'nope'; .*backprop, softmax-cross-entropy"):
        registry.exercise("nope")


def test_an_exercise_under_construction_says_so(monkeypatch):
    monkeypatch.setattr(registry, "ORDER", [*registry.ORDER, "not-yet-written"])
    with pytest.raises(registry.ExerciseMissing, match="not-yet-written is under construction"):
        registry.exercise("not-yet-written")
    assert [m.NAME for m in registry.exercises()][:2] == ["backprop", "softmax-cross-entropy"]


def test_every_written_exercise_keeps_the_contract():
    problems = [p for module in registry.exercises() for p in registry.contract_problems(module)]
    assert not problems, problems


def test_the_exercise_of_a_file(tmp_path):
    named = tmp_path / "anything.py"
    named.write_text("# kqv exercise: softmax-cross-entropy\n")
    assert registry.exercise_of_file(named) == "softmax-cross-entropy"
    by_name = tmp_path / "backprop.py"
    by_name.write_text("import numpy\n")
    assert registry.exercise_of_file(by_name) == "backprop"
    unnamed = tmp_path / "mine.py"
    unnamed.write_text("import numpy\n")
    with pytest.raises(UserError, match="first line should be '# kqv exercise: NAME'"):
        registry.exercise_of_file(unnamed)


def test_the_solution_sources_are_kqvs_own_functions():
    sources = dict(registry.solution_sources(backprop))
    assert "def backprop(" in sources["src/kqv/scratch/network.py: Network.backprop"]
    assert "def delta(" in sources["src/kqv/scratch/costs.py: QuadraticCost.delta"]


# --- check_file -----------------------------------------------------------------------------------------------


def test_the_reference_passes_and_the_report_says_so(tmp_path):
    report = runner.check_file(learner_file(tmp_path))
    assert report.exit_code == 0 and (report.passed, report.total) == (5, 5)
    lines = report.lines()
    assert lines[-1] == "5 of 5 checks pass" and all(f"✓ {c.name}" in "\n".join(lines) for c in backprop.CHECKS)
    assert json.loads(json.dumps(report.to_dict()))["passed"] == 5


def test_quick_leaves_out_the_slow_check(tmp_path):
    report = runner.check_file(learner_file(tmp_path), quick=True)
    assert report.exit_code == 0 and report.total == 4 and report.skipped == ["end to end"]
    assert any("end to end" in line and "skipped" in line for line in report.lines())


def test_an_infinite_loop_is_stopped_and_the_rest_not_run(tmp_path):
    report = runner.check_file(learner_file(tmp_path, "        while True:\n            pass\n"), timeout_s=1.0)
    assert statuses(report) == [("shapes", "error"), ("values", "not run"), ("finite differences", "not run"),
                                ("update", "not run"), ("end to end", "not run")]  # fmt: skip
    assert report.outcomes[0].message == "check `shapes` did not finish within 1 s (an infinite loop?)"
    assert report.exit_code == 1


def test_a_loop_at_import_time_is_named_as_such(tmp_path):
    report = runner.check_file(learner_file(tmp_path, at_top="while True:\n    pass\n"), timeout_s=1.0, quick=True)
    assert (
        statuses(report)[0] == ("import", "error") and "importing the file did not finish" in report.outcomes[0].message
    )
    assert {s for _, s in statuses(report)[1:]} == {"not run"}


def test_sys_exit_inside_a_check_is_reported_not_obeyed(tmp_path):
    report = runner.check_file(learner_file(tmp_path, "        import sys\n        sys.exit(3)\n"), quick=True)
    assert [s for _, s in statuses(report)] == ["error"] * 4
    assert report.outcomes[0].message.startswith("the code called sys.exit(3) (line ")


def test_os_exit_is_reported_with_its_check_and_exit_code(tmp_path):
    report = runner.check_file(learner_file(tmp_path, "        import os\n        os._exit(7)\n"), quick=True)
    assert statuses(report)[:2] == [("shapes", "error"), ("values", "not run")]
    assert "exit code 7 during check `shapes`" in report.outcomes[0].message


def test_an_exception_inside_a_check_names_it_and_its_line(tmp_path):
    report = runner.check_file(learner_file(tmp_path, "        raise KeyError('oops')\n"), quick=True)
    message = report.outcomes[0].message
    assert report.outcomes[0].status == "fail" and message.startswith("backprop() raised KeyError: 'oops' (line ")
    assert "the same as `shapes`" in "\n".join(report.lines())


def test_an_error_at_import_names_the_exception_and_the_line(tmp_path):
    path = learner_file(tmp_path, at_top="import numpyy\n")
    line = path.read_text(encoding="utf-8").splitlines().index("import numpyy") + 1
    report = runner.check_file(path, quick=True)
    assert statuses(report)[0] == ("import", "error")
    assert report.outcomes[0].message == (
        f"importing the file raised ModuleNotFoundError: No module named 'numpyy' (line {line}: import numpyy)"
    )
    assert report.total == 4 and report.passed == 0


def test_a_hundred_thousand_printed_lines_are_counted_not_shown(tmp_path):
    loud = "        for i in range(100_000):\n            print('line', i)\n"
    report = runner.check_file(learner_file(tmp_path, at_top="\n", before_backprop=loud), quick=True)
    assert report.exit_code == 0 and report.output_lines >= 100_000
    lines = report.lines()
    assert len(lines) < 30 and "    | line 0" in lines and any(l.startswith("your code printed") for l in lines)


def test_unusable_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        runner.check_file(tmp_path / "absent.py")
    with pytest.raises(UserError, match="is not a file"):
        runner.check_file(tmp_path, name="backprop")
    broken = learner_file(tmp_path, "        x = = 1\n")
    line = broken.read_text(encoding="utf-8").splitlines().index("        x = = 1") + 1
    with pytest.raises(UserError, match=rf"backprop\.py line {line}: SyntaxError: invalid syntax \(x = = 1\)"):
        runner.check_file(broken)


def test_the_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(runner.TIMEOUT_ENV, "3.5")
    assert runner.default_timeout() == 3.5
    monkeypatch.setenv(runner.TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match="KQV_EXERCISE_TIMEOUT"):
        runner.default_timeout()


def test_outcomes_after_a_crash_between_checks():
    """The child's events end after `values` started: `values` is the one that crashed, the rest not run."""
    events = [
        {"event": "ready", "checks": [{"name": n, "slow": n == "c"} for n in "abc"]},
        {"event": "started", "check": "import"},
        {"event": "started", "check": "a"},
        {"event": "outcome", "check": "a", "status": "pass"},
        {"event": "started", "check": "b"},
    ]  # fmt: skip
    outcomes = runner._outcomes(events, runner.Ending("exited", "b", code=-9), ["a", "b", "c"], 20.0)
    assert [(o.check, o.status) for o in outcomes] == [("a", "pass"), ("b", "error"), ("c", "not run")]
    assert outcomes[1].message == "the checker's process was killed by SIGKILL (out of memory?) during check `b`"
    assert Check("x", "y", lambda learner: None).slow is False
