"""`kqv bench sample`: kqv's KV-cached greedy decoding against `transformers`' GPT-2, same weights.

One random GPT-2-shaped model (the `gpt2` preset: 124M parameters) is built in kqv and copied,
key by key (kqv.models.hf), into `transformers.GPT2LMHeadModel`. Both continue the same prompt
greedily for the same number of new tokens: kqv with `kqv.generate.sampling.generate` (KV cache,
one thread on the CPU, its own policy), transformers with `model.generate(do_sample=False,
use_cache=True)` at one thread and at the process's thread count. Each round runs all of them
one after another (interleaved, so a noisy neighbour slows each alike); the rates are medians of
the rounds. The ratio is kqv's rate over the faster transformers setting, and the tokens must be
the same: identical weights, identical greedy choices.

Tokens/s count new tokens over the whole call, prompt processing (prefill) included, for both.
"""

import os
import platform
import time
from dataclasses import asdict, dataclass, field

import torch

from kqv.config import GPTConfig
from kqv.errors import UserError
from kqv.generate.sampling import cpu_threads, generate
from kqv.models.gpt import GPT
from kqv.models.hf import gpt2_problems, hf_config_from_gpt, to_hf_tensors


@dataclass
class SampleBench:
    preset: str
    device: str
    parameters: int
    prompt_tokens: int
    new_tokens: int
    rounds: int
    threads: int  # the process's torch threads; kqv's cached CPU decoding runs on 1 of them
    kqv_tokens_per_second: float
    transformers_tokens_per_second: float  # the faster of the thread settings below
    transformers_by_threads: dict[int, float] = field(default_factory=dict)
    ratio: float = 0.0  # kqv / transformers
    same_tokens: bool = False
    max_logit_difference: float = 0.0  # on the prompt, kqv vs transformers, float32
    transformers_version: str = ""
    attention: str = ""  # transformers' attention implementation

    def to_dict(self) -> dict:
        return asdict(self)


def transformers_gpt2(model: GPT):
    """`transformers.GPT2LMHeadModel` holding `model`'s weights (converted key by key, nothing left out)."""
    try:
        import transformers
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        raise UserError("this benchmark compares against transformers: pip install 'transformers>=4.40'") from None
    transformers.logging.set_verbosity_error()
    hf = GPT2LMHeadModel(GPT2Config(**hf_config_from_gpt(model.config, None)))
    result = hf.load_state_dict(to_hf_tensors(model), strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}, result  # the tied head
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr(), "transformers' LM head is not tied"
    hf.generation_config.eos_token_id = None  # never stop early: both write exactly the tokens asked for
    hf.generation_config.pad_token_id = None
    return hf.eval()


def bench_sample(
    model_cfg: GPTConfig,
    preset: str,
    new_tokens: int = 200,
    prompt_tokens: int = 16,
    rounds: int = 3,
    seed: int = 0,
) -> SampleBench:
    problems = gpt2_problems(model_cfg)
    if problems:
        raise UserError(f"preset {preset} is not GPT-2, so transformers cannot run it: " + "; ".join(problems))
    if prompt_tokens + new_tokens > model_cfg.block_size:
        raise UserError(
            f"{prompt_tokens} prompt + {new_tokens} new tokens do not fit the context of {model_cfg.block_size}: "
            "transformers' GPT-2 stops there (kqv would crop the context); ask for fewer tokens"
        )
    torch.manual_seed(seed)
    model = GPT(model_cfg).eval()
    hf = transformers_gpt2(model)
    prompt = torch.randint(model_cfg.vocab_size, (prompt_tokens,), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        diff = (model(prompt[None]).logits - hf(prompt[None]).logits).abs().max().item()

    threads = torch.get_num_threads()
    settings = sorted({1, threads})

    def run_kqv(n: int) -> list[int]:
        return list(generate(model, prompt.tolist(), n, temperature=0))

    def run_hf(n: int, n_threads: int) -> list[int]:
        with cpu_threads(n_threads), torch.inference_mode():
            out = hf.generate(prompt[None], do_sample=False, max_new_tokens=n, min_new_tokens=0, use_cache=True)
        return out[0, prompt_tokens:].tolist()

    run_kqv(8)  # warm-up (and kqv's one-time weight layout, kqv.generate.layout)
    for n_threads in settings:
        run_hf(8, n_threads)
    rates: dict = {"kqv": [], **{n: [] for n in settings}}
    outputs: dict = {}
    for _ in range(rounds):
        for who in ("kqv", *settings):
            started = time.perf_counter()
            outputs[who] = run_kqv(new_tokens) if who == "kqv" else run_hf(new_tokens, who)
            rates[who].append(new_tokens / (time.perf_counter() - started))
    median = {who: sorted(r)[len(r) // 2] for who, r in rates.items()}
    by_threads = {n: median[n] for n in settings}
    best = max(by_threads.values())
    import transformers

    return SampleBench(
        preset=preset,
        device="cpu",
        parameters=model.num_parameters(),
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        rounds=rounds,
        threads=threads,
        kqv_tokens_per_second=median["kqv"],
        transformers_tokens_per_second=best,
        transformers_by_threads=by_threads,
        ratio=median["kqv"] / best,
        same_tokens=all(outputs[n] == outputs["kqv"] for n in settings) and len(outputs["kqv"]) == new_tokens,
        max_logit_difference=diff,
        transformers_version=transformers.__version__,
        attention=str(getattr(hf.config, "_attn_implementation", "eager")),
    )


def machine_info() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__}
