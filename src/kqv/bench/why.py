"""Speed of `kqv why`: the batched sweeps against the same work done one forward pass at a time.

On one model and a prompt of `tokens` tokens (a clean prompt and a corrupted one that differs in one
token), in the same run:

    residual patching   every (layer, position) of the residual stream: one batched call
                        (kqv.inspect.patching) against L·T single patched forward passes
    integrated grads    `steps` interpolation steps: one batched forward + backward against one pass per step
    all methods         kqv.inspect.why.answer with every method (what `kqv why --method all` computes)
    command             `kqv why … --method all` as a fresh process: start-up, loading, pictures included

The loops are the reference: the ratio says what batching buys on this machine.
"""

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

from kqv.inspect.cache import hooks, run_with_cache
from kqv.inspect.contrast import top_two
from kqv.inspect.gradients import integrated_gradients
from kqv.inspect.patching import activation_patching
from kqv.inspect.why import METHODS, answer, ask

GOALS = {"resid_patching_s": 1.0, "integrated_gradients_s": 1.0, "command_s": 5.0}


@dataclass
class WhyBench:
    model: str
    tokens: int
    layers: int
    steps: int
    resid_patching_s: float  # the batched sweep (every sweep of activation_patching, by_position=False)
    resid_loop_s: float  # L·T single patched passes
    integrated_gradients_s: float
    integrated_loop_s: float
    all_methods_s: float  # kqv.inspect.why.answer, every method, in this process
    command_s: float | None  # `kqv why … --method all` as a new process, wall

    def ratios(self) -> dict:
        return {
            "patching_batched_vs_loop": self.resid_loop_s / self.resid_patching_s,
            "ig_batched_vs_loop": self.integrated_loop_s / self.integrated_gradients_s,
        }

    def goals(self) -> dict:
        return {name: getattr(self, name) is not None and getattr(self, name) <= limit for name, limit in GOALS.items()}


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def resid_loop(model, clean: list[int], corrupt: list[int], contrast) -> torch.Tensor:
    """The residual sweep one patched forward pass at a time -> (L, T) logit differences."""
    _, cache = run_with_cache(model, torch.tensor([clean]), names="blocks.*.resid_pre")
    values = []
    for layer in range(model.config.n_layer):
        name = f"blocks.{layer}.resid_pre"
        for position in range(len(clean)):

            def swap(x, _, name=name, position=position):
                x = x.clone()
                x[:, position] = cache[name][:, position]
                return x

            with hooks(model, {name: swap}), torch.no_grad():
                values.append(float(contrast.of(model(torch.tensor([corrupt])).logits)[0]))
    return torch.tensor(values).view(model.config.n_layer, len(clean))


def _ig_loop(model, ids: list[int], contrast, steps: int) -> None:
    with torch.no_grad():
        embedded = model.tok_emb(torch.tensor([ids]))  # (1, T, C)
    for k in range(steps):
        point = (embedded * (k + 0.5) / steps).requires_grad_(True)
        with hooks(model, {"embed": lambda x, _, point=point: point}):
            value = contrast.of(model(torch.tensor([ids])).logits)[0]
        torch.autograd.grad(value, point)


def bench_why(
    model, tokenizer, name: str, text: str, tokens: int, steps: int, repeats: int, command: list[str] | None
) -> WhyBench:
    model.eval()
    ids = tokenizer.encode(text)[:tokens]
    if len(ids) < 3:
        raise ValueError("the prompt needs at least 3 tokens")
    corrupt = list(ids)
    corrupt[1] = (ids[1] + 1) % model.config.vocab_size  # one token changed
    with torch.no_grad():
        contrast = top_two(model(torch.tensor([ids])).logits[0, -1])
    patch = _best(lambda: activation_patching(model, ids, corrupt, contrast, by_position=False), repeats)
    loop = _best(lambda: resid_loop(model, ids, corrupt, contrast), 1)
    ig = _best(lambda: integrated_gradients(model, ids, contrast, steps=steps), repeats)
    ig_loop = _best(lambda: _ig_loop(model, ids, contrast, steps), 1)
    question = dataclasses.replace(
        ask(model, tokenizer, tokenizer.decode(ids)), corrupt_ids=corrupt, corrupt_text=tokenizer.decode(corrupt)
    )
    everything = _best(lambda: answer(model, question, METHODS, steps=steps), repeats)
    wall = None
    if command is not None:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "kqv", *command, "--out", out], check=True, capture_output=True,
                           env={**os.environ, "KQV_NO_PROGRESS": "1"})  # fmt: skip
            wall = time.perf_counter() - start
    return WhyBench(name, len(ids), model.config.n_layer, steps, patch, loop, ig, ig_loop, everything, wall)
