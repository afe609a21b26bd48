import json
import subprocess
import sys

import numpy as np
import pytest

from kqv.bench.digits import bench_digits
from kqv.data.digits import load_embedded


@pytest.mark.parametrize(("dtype", "tolerance"), [(np.float64, 1e-12), (np.float32, 1e-4)])
def test_baseline_and_kqv_compute_the_same_epoch(dtype, tolerance):
    train = load_embedded().train
    result = bench_digits(train, [64, 30, 10], batch_size=10, repeats=1, dtype=dtype)
    assert result.dtype == np.dtype(dtype).name
    assert result.max_weight_difference < tolerance  # same start, same batches: same weights up to rounding
    assert result.images == len(train.labels)
    assert result.matrix_images_per_second > 0 and result.textbook_images_per_second > 0
    assert result.speedup == pytest.approx(result.matrix_images_per_second / result.textbook_images_per_second)


def test_bench_command_reports_ratios_as_json():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kqv",
            "bench",
            "digits",
            "--batch-sizes",
            "10,50",
            "--limit",
            "500",
            "--repeats",
            "1",
            "--json",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["batch_size"] for r in result["results"]] == [10, 50]
    assert all(r["images"] == 500 and r["speedup"] > 0 for r in result["results"])
    assert result["machine"]["cpus"] >= 1
