"""The backprop exercise: its reference passes, its skeleton is all "not implemented", each known mistake is caught."""

import subprocess
import sys

import numpy as np

from kqv.exercise.exercises import backprop


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


def test_running_the_reference_file_trains_the_network(tmp_path):
    path = tmp_path / "backprop.py"
    path.write_text(backprop.reference(), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("epoch 30: test accuracy") and float(last.split()[-1]) >= 0.95
