"""`kqv bench gpt`: training speed, and sampling speed with and without the KV cache.

Training: ms per optimiser step and tokens/s on random token batches of the
preset's shape (the data pipeline is not what is measured), after warm-up steps.
Sampling: the same weights generate the same greedy tokens twice, once feeding
only the newest token through a KV cache, once re-reading the whole context
every step; both are timed in the same run (three interleaved rounds, median)
and the tokens must agree.
"""

import platform
import time
from dataclasses import asdict, dataclass

import torch

from kqv.config import GPTConfig, TrainConfig
from kqv.generate.sampling import generate
from kqv.models.gpt import GPT
from kqv.train.optim import make_optimizer


@dataclass
class GPTBench:
    preset: str
    device: str
    parameters: int
    batch_size: int
    block_size: int
    train_ms_per_iter: float
    train_tokens_per_second: float
    sample_tokens: int
    sample_tokens_per_second_cached: float
    sample_tokens_per_second_uncached: float
    cache_speedup: float
    same_tokens: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_gpt(
    model_cfg: GPTConfig,
    train_cfg: TrainConfig,
    preset: str,
    device: str = "cpu",
    iters: int = 10,
    warmup: int = 3,
    sample_tokens: int = 500,
    sample_repeats: int = 3,
) -> GPTBench:
    torch.manual_seed(0)
    model = GPT(model_cfg).to(device)
    betas = (train_cfg.beta1, train_cfg.beta2)
    optimizer = make_optimizer(model, train_cfg.lr, train_cfg.weight_decay, betas, device, train_cfg.decay_embeddings)
    B, T, V = train_cfg.batch_size, model_cfg.block_size, model_cfg.vocab_size
    x = torch.randint(0, V, (B, T), device=device)  # (B, T)
    y = torch.randint(0, V, (B, T), device=device)  # (B, T)
    model.train()
    times = []
    for i in range(warmup + iters):
        _sync(device)
        started = time.perf_counter()
        loss = model(x, y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    step = sorted(times)[len(times) // 2]  # median: robust to a noisy neighbour

    model.eval()
    prompt = [0]
    rounds, outputs = {True: [], False: []}, {}  # tokens/s of each round, by use_cache
    for use_cache in (True, False):
        list(generate(model, prompt, 8, temperature=0, use_cache=use_cache))  # warm-up
    for _ in range(sample_repeats):  # interleaved, so a noisy neighbour slows both alike
        for use_cache in (True, False):
            _sync(device)
            started = time.perf_counter()
            outputs[use_cache] = list(generate(model, prompt, sample_tokens, temperature=0, use_cache=use_cache))
            _sync(device)
            rounds[use_cache].append(sample_tokens / (time.perf_counter() - started))
    rates = {use_cache: sorted(r)[len(r) // 2] for use_cache, r in rounds.items()}  # medians
    return GPTBench(
        preset=preset,
        device=device,
        parameters=model.num_parameters(),
        batch_size=B,
        block_size=T,
        train_ms_per_iter=1000 * step,
        train_tokens_per_second=B * T / step,
        sample_tokens=sample_tokens,
        sample_tokens_per_second_cached=rates[True],
        sample_tokens_per_second_uncached=rates[False],
        cache_speedup=rates[True] / rates[False],
        same_tokens=outputs[True] == outputs[False],
    )


def machine_info(device: str) -> dict:
    import os

    info = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__}
    info["threads"] = torch.get_num_threads()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info
