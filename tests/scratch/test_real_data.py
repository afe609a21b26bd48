"""The issue's accuracy bars on real MNIST-format data, through the CLI (about a minute each)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import FASHION_MNIST, FASHION_MNIST_WHY, MNIST, MNIST_WHY, require_dir


@pytest.mark.parametrize(
    ("folder", "why", "bar"),
    [
        (MNIST, MNIST_WHY, 0.98),  # Nielsen's book: 0.9804
        (FASHION_MNIST, FASHION_MNIST_WHY, 0.88),
    ],
    ids=["mnist", "fashion-mnist"],
)
def test_784_100_10_cross_entropy_l2_reaches_the_bar(tmp_path, folder, why, bar):
    require_dir(folder, why)
    proc = subprocess.run(
        [sys.executable, "-m", "kqv", "digits", "train", "--data", str(folder), "--out", str(tmp_path / "m"), "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["sizes"] == [784, 100, 10] and result["hyperparameters"]["lmbda"] == 5.0
    assert len(result["history"]) == 30
    assert result["test_accuracy"] >= bar
