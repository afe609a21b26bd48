"""`kqv exercise …` as a learner meets it: start, check, list, solution; exit codes 0 / 1 / 2, never a traceback."""

import os
import subprocess
import sys

import pytest

from kqv.exercise.exercises import backprop, softmax_cross_entropy
from tests.commands.running import cli, last_json
from tests.exercise.mistakes import mistake


def kqv(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kqv", *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, **(env or {})}, timeout=120,
    )  # fmt: skip


def test_start_then_check_the_untouched_skeleton(tmp_path):
    start = kqv("exercise", "start", "backprop", "--dir", tmp_path / "tmp")
    assert start.returncode == 0, start.stderr
    path = tmp_path / "tmp" / "backprop.py"
    assert path.read_text(encoding="utf-8") == backprop.skeleton()
    assert "write backprop() and update_mini_batch()" in start.stdout
    proc = kqv("exercise", "check", path)
    assert proc.returncode == 1 and proc.stderr == ""
    lines = proc.stdout.strip().splitlines()
    for check in backprop.CHECKS:
        assert any(line.startswith(f"  · {check.name} ") and "not implemented yet" in line for line in lines), check
    assert lines[-1] == "0 of 5 checks pass" and "Traceback" not in proc.stdout


def test_the_reference_passes_with_json(tmp_path):
    path = tmp_path / "backprop.py"
    path.write_text(backprop.reference(), encoding="utf-8")
    proc = kqv("exercise", "check", path, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == "5 of 5 checks pass"
    result = last_json(proc.stdout)
    assert result["command"] == "exercise check" and (result["passed"], result["total"]) == (5, 5)
    assert [c["status"] for c in result["checks"]] == ["pass"] * 5


def test_a_failing_check_shows_expected_got_and_hint(tmp_path):
    wrong = mistake("backprop", "sign_flipped").write(tmp_path)
    proc = kqv("exercise", "check", wrong, "--quick")
    assert proc.returncode == 1
    out = proc.stdout
    assert "  ✓ shapes" in out and "  ✗ values" in out and "expected: " in out and "got:      " in out
    assert "hint:     every gradient has the opposite sign" in out
    assert "end to end" in out and "skipped (slow: run without --quick)" in out


def test_an_infinite_loop_times_out_by_the_option_and_by_the_environment(tmp_path):
    path = tmp_path / "looping.py"
    forward = "        zs, activations = [], [x]"
    path.write_text(backprop.reference().replace(forward, "        while True:\n            pass\n" + forward))
    proc = kqv("exercise", "check", path, "--timeout", "1", "--quick")
    assert proc.returncode == 1 and "check `shapes` did not finish within 1 s (an infinite loop?)" in proc.stdout
    assert proc.stdout.count("not run") == 3 and proc.stderr == ""
    proc = kqv("exercise", "check", path, "--quick", env={"KQV_EXERCISE_TIMEOUT": "1.5"})
    assert proc.returncode == 1 and "did not finish within 1.5 s" in proc.stdout


def test_os_exit_in_the_learners_code(tmp_path):
    path = tmp_path / "backprop.py"
    path.write_text(backprop.reference().replace("        x, y = batch\n", "        import os\n        os._exit(4)\n"))
    proc = kqv("exercise", "check", path, "--quick")
    assert proc.returncode == 1 and proc.stderr == ""
    assert "exit code 4 during check `update`" in proc.stdout and "3 of 4 checks pass" in proc.stdout


def test_unusable_input_is_one_line_and_exit_2(tmp_path, capsys):
    broken = tmp_path / "backprop.py"
    text = backprop.skeleton().replace("import numpy as np\n", "import numpy as np\nif True\n")
    broken.write_text(text, encoding="utf-8")
    line = text.splitlines().index("if True") + 1
    code, out, err = cli(capsys, "exercise", "check", broken)
    assert code == 2 and err.strip() == f"kqv: error: {broken} line {line}: SyntaxError: expected ':' (if True)"
    code, out, err = cli(capsys, "exercise", "check", tmp_path / "absent.py")
    assert code == 2 and "absent.py: no such file" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "exercise", "start", "nope", "--dir", tmp_path)
    assert code == 2 and "no exercise is called 'nope'" in err and "backprop" in err


def test_start_never_overwrites_without_force(tmp_path, capsys):
    path = tmp_path / "softmax_cross_entropy.py"
    path.write_text("# my work\n")
    code, out, err = cli(capsys, "exercise", "start", "softmax-cross-entropy", "--dir", tmp_path)
    assert code == 2 and "exists already" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert path.read_text() == "# my work\n"
    code, out, err = cli(capsys, "exercise", "start", "softmax-cross-entropy", "--dir", tmp_path, "--force")
    assert code == 0 and path.read_text(encoding="utf-8") == softmax_cross_entropy.skeleton()


def test_list_shows_passes_fails_and_not_started(tmp_path, capsys, monkeypatch):
    (tmp_path / "backprop.py").write_text(backprop.reference(), encoding="utf-8")
    wrong = mistake("softmax-cross-entropy", "wrong_axis").text()
    (tmp_path / "softmax_cross_entropy.py").write_text(wrong, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "exercise", "list", "--json")
    assert code == 0, err
    lines = out.splitlines()
    row = {line.split()[0]: line for line in lines[1:-2]}
    assert "✓ passes" in row["backprop"] and "1. Digits" in row["backprop"]
    assert "✗ fails (2 of 8)" in row["softmax-cross-entropy"]  # shapes and loss values: its loss is right
    statuses = {e["name"]: e["status"] for e in last_json(out)["exercises"]}
    assert statuses["backprop"] == "passes" and statuses["softmax-cross-entropy"] == "fails"
    assert list(statuses)[2:] == ["attention", "causal-mask", "positional-encoding", "multi-head", "kv-cache",
                                  "beam-search"]  # fmt: skip
    assert all(s in ("not started", "") for s in list(statuses.values())[2:])  # "" while under construction


def test_solution_refuses_before_passing_and_shows_after(tmp_path, capsys):
    code, out, err = cli(capsys, "exercise", "solution", "backprop", "--dir", tmp_path)
    assert code == 1 and out == "" and "no " in err and "--show-anyway" in err
    (tmp_path / "backprop.py").write_text(backprop.skeleton(), encoding="utf-8")
    code, out, err = cli(capsys, "exercise", "solution", "backprop", "--dir", tmp_path)
    assert code == 1 and out == "" and "does not pass yet (0 of 5 checks pass)" in err
    code, out, err = cli(capsys, "exercise", "solution", "backprop", "--dir", tmp_path, "--show-anyway")
    assert code == 0 and "src/kqv/scratch/network.py: Network.backprop" in out and "def sgd_step(" in out
    (tmp_path / "backprop.py").write_text(backprop.reference(), encoding="utf-8")
    code, out, err = cli(capsys, "exercise", "solution", "backprop", "--dir", tmp_path)
    assert code == 0 and "── src/kqv/scratch/network.py: Network.backprop ──" in out
    assert out.rstrip().endswith(backprop.reference().rstrip().splitlines()[-1])


@pytest.mark.parametrize("name", ["exercise", "exercise list", "exercise check"])
def test_help_has_examples(capsys, name):
    code, out, _ = cli(capsys, *name.split(), "--help")
    assert code == 0 and "examples:\n  kqv exercise" in out
