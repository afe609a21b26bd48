import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from kqv.bench.gpt import gpu_peak_tflops, peak_flops, training_flops_per_token
from kqv.config import GPTConfig, load_preset
from kqv.models.gpt import GPT


@pytest.fixture(scope="module")
def tiny_bench() -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "kqv", "bench", "gpt", "--preset", "tiny", "--iters", "2", "--tokens", "40", "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_gpt_reports_training_and_both_sampling_speeds(tiny_bench):
    r = tiny_bench
    assert r["command"] == "bench gpt" and r["preset"] == "tiny" and r["device"] == "cpu"
    assert r["train_ms_per_iter"] > 0 and r["train_tokens_per_second"] > 0
    assert r["sample_tokens"] == 40 and r["same_tokens"] is True  # cached and uncached greedy agree
    assert r["cache_speedup"] == r["sample_tokens_per_second_cached"] / r["sample_tokens_per_second_uncached"]
    assert r["sample_window"] == "hop"  # past tiny's context of 32: the cached path stays cached


def test_bench_gpt_samples_with_the_slide_window_when_asked():
    args = ["bench", "gpt", "--preset", "tiny", "--steps", "1", "--tokens", "40", "--window", "slide", "--json"]
    proc = subprocess.run([sys.executable, "-m", "kqv", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["sample_window"] == "slide" and r["same_tokens"] is True


def test_bench_gpt_reports_mfu_against_a_peak_measured_on_this_cpu(tiny_bench):
    r = tiny_bench
    assert r["precision"] == "fp32" and r["compiled"] is False
    assert (r["block_size"], r["batch_size"]) == (32, 8)
    L, C, T, V = 2, 32, 32, 65  # the tiny preset, at the bench's default vocabulary
    N = L * (4 * C * C + 2 * C * 4 * C) + C * V  # attention + MLP matrices per layer, and the (tied) LM head
    assert r["matmul_parameters"] == N
    assert r["flops_per_token"] == 6 * N + 12 * L * T * C
    assert r["peak_source"].startswith("measured here: float32 matmul 2048²")
    assert 1e9 < r["peak_flops"] < 1e14  # a CPU: between 1 GFLOP/s and 100 TFLOP/s
    assert 0 < r["mfu"] < 1.5
    assert r["mfu"] == pytest.approx(r["flops_per_token"] * r["train_tokens_per_second"] / r["peak_flops"])
    assert 10 < r["peak_memory_mib"] < 100_000 and "RSS" in r["memory_measure"]


@pytest.mark.parametrize("preset", ["tiny", "default", "nanogpt-cpu"])
def test_training_flops_are_three_forwards_and_6n_plus_12ltc(preset):
    """kqv explain's forward table × 3 equals the PaLM/nanoGPT formula, N counted from the model's Linear weights."""
    table = load_preset(preset)["model"]
    config = GPTConfig(**{k: v for k, v in table.items() if k != "vocab_size"}, vocab_size=101)
    model = GPT(config)
    flops, n = training_flops_per_token(model, config.block_size)
    linear = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)}
    assert n == sum(linear.values())
    assert flops == 6 * n + 12 * config.n_layer * config.block_size * config.n_embd


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H100 NVL", 835),
        ("NVIDIA H200", 989),
        ("NVIDIA GH200 480GB", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA L4", 121),
        ("NVIDIA L40S", 362),
        ("NVIDIA GeForce RTX 4090", 165),
        ("NVIDIA L40", None),  # not in the table: measured instead
        ("Tesla T4", None),
    ],
)
def test_gpu_peaks_are_chosen_by_device_name(name, tflops):
    known = gpu_peak_tflops(name)
    assert (known[0] if known else None) == tflops


def test_peak_tflops_overrides_the_table_and_the_measurement():
    assert peak_flops("cpu", torch.float32, 2.5) == (2.5e12, "--peak-tflops 2.5")
