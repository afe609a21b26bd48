"""`kqv bench gpt`: training speed and model FLOPs utilisation, and sampling speed with and without the KV cache.

Training: ms per optimiser step and tokens/s on random token batches of the
preset's shape (the data pipeline is not what is measured), after warm-up steps,
set up as `kqv gpt train` sets it up (fused AdamW; on CUDA bf16 autocast and TF32;
`compile=True`: torch.compile).

MFU (model FLOPs utilisation, PaLM appendix B) = model FLOPs per token × tokens/s ÷
the device's peak FLOP/s. Training FLOPs per token = 3 × the forward FLOPs of
kqv.inspect.explain.gpt_flops (backward ≈ 2 × forward) = 6·N + 12·L·T·C, where N
counts the weight matrices that multiply activations — attention and MLP matrices
and the LM head (the tied embedding, once); position embeddings, LayerNorms and
biases are left out — and 12·L·T·C is attention's q·kᵀ and pattern·V at the full
context T (the convention of PaLM and nanoGPT, which also ignore that a causal
mask could skip half of it). The peak: on CUDA the dense bf16 peak of the GPU from
a table of known devices (`peak_tflops` overrides it; an unknown GPU is measured);
on the CPU this machine's matmul FLOP/s measured in the same run, in the dtype the
training computes in.

Sampling: the same weights generate the same greedy tokens twice, once feeding
only the newest token through a KV cache, once re-reading the whole context
every step; both are timed in the same run (three interleaved rounds, median)
and the tokens must agree. Past the context both read the window `window` names
(kqv.generate.sampling): "hop" (the default here) keeps the cached path cached, with one refill per
half window; "slide" (sampling's default) recomputes the last block_size tokens per token once the
text outgrows them, with or without a cache.
"""

import os
import platform
import re
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn

from kqv.config import GPTConfig, TrainConfig
from kqv.device import amp_dtype, configure_device
from kqv.generate.sampling import generate
from kqv.inspect.explain import gpt_flops
from kqv.models.gpt import GPT
from kqv.train.optim import make_optimizer

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s; the first
# pattern that matches torch.cuda.get_device_name() wins, so the more specific come first.
GPU_PEAK_TFLOPS = [
    (r"GH200|H200", 989.0, "H200"),
    (r"H100.*NVL", 835.0, "H100 NVL"),
    (r"H100.*PCIe", 756.0, "H100 PCIe"),
    (r"H100", 989.0, "H100 SXM"),
    (r"B200", 2250.0, "B200"),
    (r"A100", 312.0, "A100"),
    (r"L40S", 362.0, "L40S"),
    (r"\bL4\b", 121.0, "L4"),
    (r"RTX 4090", 165.0, "RTX 4090"),
    (r"RTX 3090", 71.0, "RTX 3090"),
]


@dataclass
class GPTBench:
    preset: str
    device: str
    parameters: int
    batch_size: int
    block_size: int
    precision: str  # "bf16" (autocast) or "fp32"
    compiled: bool
    train_ms_per_iter: float
    train_tokens_per_second: float
    matmul_parameters: int  # N of 6·N + 12·L·T·C
    flops_per_token: int  # training: forward + backward
    peak_flops: float  # FLOP/s the MFU is measured against
    peak_source: str  # where that number comes from
    mfu: float  # model FLOPs utilisation, 0 … 1
    peak_memory_mib: float
    memory_measure: str  # what peak_memory_mib measures
    sample_tokens: int
    sample_window: str
    sample_tokens_per_second_cached: float
    sample_tokens_per_second_uncached: float
    cache_speedup: float
    same_tokens: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_flops_per_token(model: GPT, T: int) -> tuple[int, int]:
    """-> (training FLOPs per token at context T, N): 3 × gpt_flops's forward FLOPs, which is 6·N + 12·L·T·C."""
    rows, _ = gpt_flops(model, T)
    weights = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)}
    return 3 * sum(row.flops for row in rows), sum(weights.values())  # the tied head counts once


def matmul_flops(device: str, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """FLOP/s of an (n × n) @ (n × n) matmul on `device` in `dtype`, best of `repeats` (2·n³ FLOPs each)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    a @ b  # warm-up: kernels chosen, memory touched
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def gpu_peak_tflops(name: str) -> tuple[float, str] | None:
    """(dense bf16 TFLOP/s, model) of a GPU named as torch.cuda.get_device_name() names it; None if unknown."""
    for pattern, tflops, label in GPU_PEAK_TFLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return tflops, label
    return None


def peak_flops(device: str, dtype: torch.dtype, override_tflops: float | None = None) -> tuple[float, str]:
    """-> (peak FLOP/s, where it comes from): --peak-tflops, the GPU table, or a matmul measured here."""
    if override_tflops is not None:
        return override_tflops * 1e12, f"--peak-tflops {override_tflops:g}"
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        known = gpu_peak_tflops(name)
        if known is not None:
            tflops, label = known
            return tflops * 1e12, f"{label} dense bf16 peak {tflops:g} TFLOP/s (data sheet; {name})"
        measured = matmul_flops(device, torch.bfloat16, 8192)
        note = f"{name} is not in the table: measured here, bf16 matmul 8192², best of 5"
        return measured, f"{note}, {measured / 1e12:.0f} TFLOP/s"
    n = 2048
    measured = matmul_flops(device, dtype, n)
    dtype_name = str(dtype).removeprefix("torch.")
    return measured, (
        f"measured here: {dtype_name} matmul {n}², best of 5, {torch.get_num_threads()} threads, "
        f"{measured / 1e9:.1f} GFLOP/s"
    )


def peak_memory_mib(device: str) -> tuple[float, str]:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated during training"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss * (1 if sys.platform == "darwin" else 1024) / 2**20, "peak RSS of the whole process (getrusage)"


def bench_gpt(
    model_cfg: GPTConfig,
    train_cfg: TrainConfig,
    preset: str,
    device: str = "cpu",
    iters: int = 10,
    warmup: int = 3,
    sample_tokens: int = 500,
    sample_repeats: int = 3,
    window: str = "hop",
    compile_model: bool = False,
    peak_tflops: float | None = None,
) -> GPTBench:
    torch.manual_seed(0)
    configure_device(device)
    model = GPT(model_cfg).to(device)
    forward = torch.compile(model) if compile_model else model
    amp = amp_dtype(device)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=amp) if amp is not None else nullcontext()
    betas = (train_cfg.beta1, train_cfg.beta2)
    optimizer = make_optimizer(model, train_cfg.lr, train_cfg.weight_decay, betas, device, train_cfg.decay_embeddings)
    B, T, V = train_cfg.batch_size, model_cfg.block_size, model_cfg.vocab_size
    x = torch.randint(0, V, (B, T), device=device)  # (B, T)
    y = torch.randint(0, V, (B, T), device=device)  # (B, T)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    times = []
    for i in range(warmup + iters):
        _sync(device)
        started = time.perf_counter()
        with autocast:
            loss = forward(x, y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    step = sorted(times)[len(times) // 2]  # median: robust to a noisy neighbour
    memory, memory_measure = peak_memory_mib(device)  # before the matmul below allocates its own
    flops_per_token, n_matmul = training_flops_per_token(model, T)
    peak, peak_source = peak_flops(device, amp or torch.float32, peak_tflops)
    tokens_per_second = B * T / step

    model.eval()
    prompt = [0]
    rounds, outputs = {True: [], False: []}, {}  # tokens/s of each round, by use_cache
    for use_cache in (True, False):
        list(generate(model, prompt, 8, temperature=0, use_cache=use_cache, window=window))  # warm-up
    for _ in range(sample_repeats):  # interleaved, so a noisy neighbour slows both alike
        for use_cache in (True, False):
            _sync(device)
            started = time.perf_counter()
            outputs[use_cache] = list(
                generate(model, prompt, sample_tokens, temperature=0, use_cache=use_cache, window=window)
            )
            _sync(device)
            rounds[use_cache].append(sample_tokens / (time.perf_counter() - started))
    rates = {use_cache: sorted(r)[len(r) // 2] for use_cache, r in rounds.items()}  # medians
    return GPTBench(
        preset=preset,
        device=device,
        parameters=model.num_parameters(),
        batch_size=B,
        block_size=T,
        precision="bf16" if amp is not None else "fp32",
        compiled=compile_model,
        train_ms_per_iter=1000 * step,
        train_tokens_per_second=tokens_per_second,
        matmul_parameters=n_matmul,
        flops_per_token=flops_per_token,
        peak_flops=peak,
        peak_source=peak_source,
        mfu=flops_per_token * tokens_per_second / peak,
        peak_memory_mib=memory,
        memory_measure=memory_measure,
        sample_tokens=sample_tokens,
        sample_window=window,
        sample_tokens_per_second_cached=rates[True],
        sample_tokens_per_second_uncached=rates[False],
        cache_speedup=rates[True] / rates[False],
        same_tokens=outputs[True] == outputs[False],
    )


def machine_info(device: str) -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__}
    info["threads"] = torch.get_num_threads()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info
