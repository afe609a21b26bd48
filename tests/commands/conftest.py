"""Runs that several command tests look inside."""

import numpy as np
import pytest

from kqv.cli import main

NUMBERS_EN = "zero one two three four five six seven eight nine".split()
NUMBERS_ES = "cero uno dos tres cuatro cinco seis siete ocho nueve".split()


@pytest.fixture(scope="module")
def tr_run(tmp_path_factory):
    """A tiny English→Spanish numbers Transformer (1 + 1 layers × 2 heads, BPE) trained 30 steps."""
    folder = tmp_path_factory.mktemp("tr")
    tsv = folder / "numbers.tsv"
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(300):
        digits = rng.integers(0, 10, rng.integers(1, 6))
        lines.append(f"{' '.join(NUMBERS_EN[d] for d in digits)}\t{' '.join(NUMBERS_ES[d] for d in digits)}\n")
    tsv.write_text("".join(lines), encoding="utf-8")
    out = folder / "run"
    assert main(["translate", "train", "--preset", "tiny", "--data", str(tsv), "--out", str(out)]) == 0
    return out
