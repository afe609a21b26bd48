"""`kqv explain`: every tensor with its shape, parameter totals that match the model, FLOPs, bad input.

Runs in-process through `kqv.cli.main`; the run-directory case trains the tiny preset once.
"""

import json

import pytest

from kqv.cli import main
from kqv.config import GPTConfig, TransformerConfig, from_dict, load_preset
from kqv.inspect.cache import hook_points
from kqv.models.gpt import GPT
from kqv.models.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def explain(capsys, *args) -> tuple[str, dict]:
    assert main(["explain", *map(str, args), "--json"]) == 0
    out = capsys.readouterr().out
    return out, json.loads(out.strip().splitlines()[-1])


def shape_text(shape) -> str:
    return str(tuple(shape))


def test_a_gpt_preset_lists_every_tensor_and_counts_every_parameter(capsys):
    out, result = explain(capsys, "--preset", "nanogpt-cpu")
    model = GPT(from_dict(GPTConfig, {**load_preset("nanogpt-cpu")["model"], "vocab_size": 65}))
    T = len("The pizza came out of the oven and it tasted good")  # one token per character
    assert result["model"].startswith("preset nanogpt-cpu") and result["tokens"] == T

    # every hook point, each printed on one line with its shape and a meaning
    names = [row["name"] for row in result["tensors"]]
    assert sorted(names) == sorted(hook_points(model)) and len(names) == 4 + 4 * 12
    shapes = {row["name"]: tuple(row["shape"]) for row in result["tensors"]}
    assert shapes["blocks.0.attn.q"] == (1, 4, T, 32) and shapes["blocks.3.attn.pattern"] == (1, 4, T, T)
    assert shapes["blocks.2.mlp.hidden"] == (1, T, 512) and shapes["logits"] == (1, T, 65)
    lines = out.splitlines()
    for row in result["tensors"]:
        line = next(line for line in lines if line.split()[:1] == [row["name"]])
        assert shape_text(row["shape"]) in line and row["meaning"] in line and row["meaning"]
    assert "what each of the 49 tokens asks" in out

    # the header explains the letters
    notation = result["notation"]
    assert {s: notation[s]["value"] for s in ("B", "T", "C", "nh", "hs", "V")} == dict(
        B=1, T=T, C=128, nh=4, hs=32, V=65
    )
    for symbol in ("B", "T", "C", "nh", "hs", "V"):
        assert any(line.split()[:2] == [symbol, "="] for line in lines)

    # parameters: the tied matrix counts once, so the total is sum(p.numel())
    total = sum(p.numel() for p in model.parameters())
    assert result["total_parameters"] == total == 804_096
    assert sum(row["count"] for row in result["parameters"]) == total
    assert f"{total:,}" in out
    lm_head = next(row for row in result["parameters"] if row["module"] == "lm_head")
    assert lm_head["count"] == 0 and "tied" in lm_head["note"]

    # FLOPs per token: 2 per weight in a matmul, plus 4·T·C per layer for attention
    flops = {row["part"].split(" (")[0]: row for row in result["flops"]}
    C, L, V = 128, 4, 65
    assert flops["attention projections W_Q, W_K, W_V, W_O"]["flops"] == 2 * 4 * C * C * L
    assert flops["attention scores q·kᵀ"]["flops"] == 2 * T * C * L
    assert flops["attention scores q·kᵀ"]["flops_at_limit"] == 2 * 64 * C * L
    assert flops["LM head"]["flops"] == 2 * C * V
    matmul_weights = total - 65 * C - 64 * C - (2 * L + 1) * C + 65 * C  # all but embeddings and LayerNorms, + head
    assert sum(r["flops"] for r in result["flops"]) == 2 * matmul_weights + 4 * T * C * L


def test_a_translation_preset_shows_encoder_decoder_and_cross_attention(capsys):
    out, result = explain(capsys, "--preset", "translate/tiny")
    S, T = result["source_tokens"], result["target_tokens"]
    assert result["target"] == "La pizza salió del horno y sabía bien"
    config = from_dict(TransformerConfig, {**load_preset("tiny", "translate")["model"], "vocab_size": 300})
    model = Transformer(config)
    shapes = {row["name"]: tuple(row["shape"]) for row in result["tensors"]}
    assert sorted(shapes) == sorted(hook_points(model))
    assert shapes["encoder.0.self_attn.pattern"] == (1, 2, S, S)
    assert shapes["decoder.0.self_attn.pattern"] == (1, 2, T, T)
    assert shapes["decoder.0.cross_attn.pattern"] == (1, 2, T, S)
    assert shapes["decoder.0.cross_attn.k"] == (1, 2, S, 16) and shapes["memory"] == (1, S, 32)
    assert result["total_parameters"] == sum(p.numel() for p in model.parameters())
    assert "total per source token" in out and "total per target token" in out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    assert main(["gpt", "train", "--preset", "tiny", "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_a_trained_run_is_explained_on_the_given_text(run_dir, capsys):
    capsys.readouterr()
    out, result = explain(capsys, run_dir, "--text", "ROMEO: But soft")
    assert result["model"] == str(run_dir) and result["tokens"] == 15
    shapes = {row["name"]: tuple(row["shape"]) for row in result["tensors"]}
    assert shapes["blocks.1.attn.scores"] == (1, 2, 15, 15)
    # the default text is longer than the tiny preset's block_size (32): cropped, and said so
    out, result = explain(capsys, run_dir)
    assert result["tokens"] == 32 and "cropped to block_size = 32" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/run"], "no such run directory"),
        (["--preset", "huge"], "no such preset"),
        (["--preset", "translate/huge"], "no such preset"),
        (["--preset", "tiny", "--text", "snowman ☃"], "☃"),
        (["--preset", "tiny", "--text", ""], "--text is empty"),
        (["--preset", "tiny", "--target", "hola"], "--target is for translation models"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message, capsys):
    assert main(["explain", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_run_and_preset_together_are_refused(run_dir, capsys):
    assert main(["explain", str(run_dir), "--preset", "tiny"]) == 2
    assert "not both" in capsys.readouterr().err
