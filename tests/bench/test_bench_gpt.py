import json
import subprocess
import sys


def test_bench_gpt_reports_training_and_both_sampling_speeds():
    proc = subprocess.run(
        [sys.executable, "-m", "kqv", "bench", "gpt", "--preset", "tiny", "--iters", "2", "--tokens", "40", "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["command"] == "bench gpt" and r["preset"] == "tiny" and r["device"] == "cpu"
    assert r["train_ms_per_iter"] > 0 and r["train_tokens_per_second"] > 0
    assert r["sample_tokens"] == 40 and r["same_tokens"] is True  # cached and uncached greedy agree
    assert r["cache_speedup"] == r["sample_tokens_per_second_cached"] / r["sample_tokens_per_second_uncached"]
