"""`kqv bench sample`: kqv's cached greedy decoding vs transformers' GPT-2 generate, on a tiny
GPT-2-shaped model (the 124M `gpt2` preset is for the command line, not for tests)."""

import json
import re

import pytest
import torch

from kqv.bench.sample import bench_sample
from kqv.config import GPTConfig, from_dict, load_preset
from kqv.models.gpt import GPT
from tests.commands.running import cli

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_GPT2 = ("--preset", "tiny", "--set", "bias=true", "--set", "activation=gelu_tanh", "--vocab-size", "300")


def test_bench_sample_times_both_and_the_tokens_agree():
    config = GPTConfig(vocab_size=200, block_size=40, n_layer=2, n_head=2, n_embd=32, bias=True, activation="gelu_tanh")
    r = bench_sample(config, "test", new_tokens=20, prompt_tokens=5, rounds=2)
    assert r.same_tokens is True and r.new_tokens == 20 and r.rounds == 2
    assert r.max_logit_difference <= 1e-5  # the same weights in both, converted key by key
    assert r.kqv_tokens_per_second > 0 and set(r.transformers_by_threads) == {1, r.threads}
    assert r.transformers_tokens_per_second == max(r.transformers_by_threads.values())
    assert r.ratio == r.kqv_tokens_per_second / r.transformers_tokens_per_second
    assert r.parameters == GPT(config).num_parameters()


def test_the_command_prints_rates_and_ends_with_json(capsys):
    code, out, err = cli(capsys, "bench", "sample", *TINY_GPT2, "--tokens", 12, "--prompt-tokens", 4, "--rounds", 1,
                         "--json")  # fmt: skip
    assert code == 0, err
    assert "kqv generate (KV cache, 1 thread):" in out and "transformers generate (1 thread):" in out
    r = json.loads(out.strip().splitlines()[-1])
    assert r["command"] == "bench sample" and r["preset"] == "tiny" and r["same_tokens"] is True
    assert r["new_tokens"] == 12 and r["prompt_tokens"] == 4 and r["parameters"] > 0 and r["ratio"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("--preset", "tiny"), r"preset tiny is not GPT-2.*bias is False.*activation is 'gelu'"),
        ((*TINY_GPT2, "--tokens", 30), r"4 prompt \+ 30 new tokens do not fit the context of 32"),
        (("--preset", "nope"), r"unknown preset 'nope'"),
    ],
)
def test_bad_requests_are_one_line_errors(capsys, args, message):
    code, out, err = cli(capsys, "bench", "sample", *args, "--prompt-tokens", 4)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_the_gpt2_preset_is_gpt2_small():
    tables = load_preset("gpt2")
    with torch.device("meta"):  # 124M parameters, not allocated
        model = GPT(from_dict(GPTConfig, {**tables["model"], "vocab_size": 50257}))
    assert model.num_parameters() == 124_439_808  # GPT-2 small: 124M, the tied head counted once
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.bias, c.activation) == (12, 12, 768, 1024, True, "gelu_tanh")
