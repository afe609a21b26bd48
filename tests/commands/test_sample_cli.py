"""`kqv gpt sample` with sampling values that cannot break it (PITFALL 21) and past the context window:
a bad temperature, top-p, top-k or seed is one `kqv: error:` line with exit code 2 before anything is
written; temperatures below TEMPERATURE_FLOOR decode greedily; --window slide|hop read the windows they
promise; a mask=none run samples without a KV cache. Greedy texts are checked against a loop written
here (a fresh forward pass over the window, then argmax or a seeded draw), not against the code under test.
"""

import contextlib
import io
import re

import pytest
import torch

from kqv.cli import main
from kqv.families.gpt import GPT_FAMILY
from kqv.generate.sampling import MAX_SEED, TEMPERATURE_FLOOR, generate
from tests.commands.running import cli, last_json

PROMPT = "ROMEO:"
N_NEW = 40  # tiny's block_size is 32: the text outgrows the context

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train(out, *sets: str) -> None:
    """`kqv gpt train --preset tiny --max-iters 2 --set eval_iters=1 --out OUT`, in this process."""
    args = ["gpt", "train", "--preset", "tiny", "--max-iters", "2", "--set", "eval_iters=1", "--device", "cpu"]
    for s in sets:
        args += ["--set", s]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main([*args, "--out", str(out)])
    assert code == 0, err.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "run"
    train(out)
    return out


@pytest.fixture(scope="module")
def none_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "none"
    train(out, "mask=none")
    return out


def by_hand(run_dir, n_new: int, window: str, seed: int | None = None) -> str:
    """A fresh forward pass over the window the model should read, one token at a time; then the argmax
    (seed None) or a draw from softmax(logits) (temperature 1) with a generator seeded with `seed`."""
    loaded = GPT_FAMILY.load(run_dir)
    model, block = loaded.model.eval(), loaded.model.config.block_size
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    ids = loaded.tokenizer.encode(PROMPT)
    n_prompt = len(ids)
    with torch.no_grad():
        for _ in range(n_new):
            start = max(0, len(ids) - block)
            if window == "hop":
                start = 0
                while len(ids) - start > block:
                    start += block // 2
            logits = model(torch.tensor([ids[start:]])).logits[0, -1]  # (V,)
            if generator is None:
                ids.append(int(logits.argmax()))
            else:
                ids.append(int(torch.multinomial(torch.softmax(logits, -1)[None], 1, generator=generator)[0, 0]))
    return loaded.tokenizer.decode(ids[n_prompt:])


def sample_json(capsys, run_dir, *args) -> dict:
    code, out, err = cli(capsys, "gpt", "sample", run_dir, "--prompt", PROMPT, "--tokens", N_NEW, *args, "--json")
    assert code == 0 and "Traceback" not in err, err
    return last_json(out)


BAD = {
    "temperature-nan": (["--temperature", "nan"], "--temperature must be a finite number ≥ 0"),
    "temperature-inf": (["--temperature", "inf"], "--temperature must be a finite number ≥ 0"),
    "temperature-minus-inf": (["--temperature=-inf"], "--temperature must be a finite number ≥ 0"),
    "temperature-negative": (["--temperature", "-1"], "--temperature must be a finite number ≥ 0"),
    "seed-2^64": (["--seed", str(2**64)], "--seed must be a whole number in 0 … 2^64 − 1"),
    "seed-negative": (["--seed", "-1"], "--seed must be a whole number in 0 … 2^64 − 1"),
    "top-p-nan": (["--top-p", "nan"], "--top-p must be in [0, 1], got nan"),
    "top-p-above-1": (["--top-p", "1.5"], "--top-p must be in [0, 1], got 1.5"),
    "top-p-negative": (["--top-p", "-0.1"], "--top-p must be in [0, 1], got -0.1"),
    "top-k-0": (["--top-k", "0"], "--top-k must be ≥ 1, got 0"),
    "top-k-negative": (["--top-k", "-3"], "--top-k must be ≥ 1, got -3"),
}


@pytest.mark.parametrize("as_json", [False, True], ids=["streamed", "json"])
@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_sampling_value_is_one_line_and_exit_2_before_any_output(case, as_json, run, tmp_path, capsys):
    args, message = BAD[case]
    for run_dir in (run, tmp_path / "no-such-run"):  # checked before the run is even opened
        code, out, err = cli(capsys, "gpt", "sample", run_dir, "--prompt", PROMPT, *args, *["--json"] * as_json)
        assert code == 2, err
        assert err.startswith("kqv: error: ") and err.endswith("\n") and err.count("\n") == 1, err
        assert message in err and "Traceback" not in err
        assert out == ""  # not even the prompt: nothing was generated


@pytest.mark.parametrize("temperature", ["0", "5e-324", "1e-300", "1e-5"])
def test_a_temperature_below_the_floor_samples_greedily(temperature, run, capsys):
    assert float(temperature) < TEMPERATURE_FLOOR
    result = sample_json(capsys, run, "--temperature", temperature, "--top-p", "0.5", "--seed", "7")
    assert result["tokens"] == N_NEW
    assert result["text"] == by_hand(run, N_NEW, "slide")


@pytest.fixture(scope="module")
def by_window(run):
    """What temperature 1, seed 1 should write with each window; the two differ (else the test could not tell)."""
    texts = {window: by_hand(run, N_NEW, window, seed=1) for window in ("slide", "hop")}
    assert texts["slide"] != texts["hop"]
    return texts


@pytest.mark.parametrize("window", ["slide", "hop"])
def test_window_past_the_context_reads_what_it_promises(window, run, by_window, capsys):
    result = sample_json(capsys, run, "--temperature", "1", "--seed", "1", "--window", window)
    assert result["window"] == window and result["cache"] is True
    assert result["text"] == by_window[window]
    uncached = sample_json(capsys, run, "--temperature", "1", "--seed", "1", "--window", window, "--no-cache")
    assert uncached["cache"] is False and uncached["text"] == result["text"]


def test_the_default_window_slides(run, by_window, capsys):
    result = sample_json(capsys, run, "--temperature", "1", "--seed", "1")
    assert result["window"] == "slide" and result["text"] == by_window["slide"]


def test_the_largest_seed_is_valid_and_reproducible(run, capsys):
    first = sample_json(capsys, run, "--seed", str(MAX_SEED), "--temperature", "1")
    assert first["tokens"] == N_NEW
    assert sample_json(capsys, run, "--seed", str(MAX_SEED), "--temperature", "1")["text"] == first["text"]
    loaded = GPT_FAMILY.load(run)
    ids = list(generate(loaded.model, loaded.tokenizer.encode(PROMPT), N_NEW, temperature=1.0, seed=2**64 - 1))
    assert first["text"] == loaded.tokenizer.decode(ids)


def test_a_mask_none_run_samples_without_a_cache(none_run, capsys):
    result = sample_json(capsys, none_run, "--temperature", "0")
    assert result["cache"] is False  # a cache is not exact under mask=none: recomputed, silently
    assert result["text"] == by_hand(none_run, N_NEW, "slide")
    code, out, err = cli(capsys, "gpt", "sample", none_run, "--prompt", PROMPT, "--tokens", 5, "--temperature", 0.7)
    assert code == 0 and err == "" and out.startswith(PROMPT), err


def test_help_says_tiny_temperatures_are_greedy_and_offers_both_windows(capsys):
    code, out, _ = cli(capsys, "gpt", "sample", "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps lines
    floor = re.search(r"below (\S+) counts as 0: greedy", text)
    assert floor and float(floor.group(1)) == TEMPERATURE_FLOOR
    assert "--window {slide,hop}" in text and "--window hop" in text
