"""`kqv gpt train|sample|eval` as a user meets them: run files, --json, one-line errors
with exit code 2, and a run killed with SIGKILL that resumes to the end.

Training, sampling across processes and the kill run as real processes. The rest runs
in-process through `kqv.cli.main` (the code path of `python -m kqv`, minus ~2 s of
interpreter start-up each); a few bad inputs run again as real processes to check the
exit code, stderr and the absence of a traceback end to end.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kqv.data.text import read_corpus
from kqv.runs.weights import read_safetensors
from kqv.train.loop import LOG_FIELDS, read_log
from kqv.train.optim import learning_rate
from tests.commands.running import cli, last_json

ENV = {**os.environ, "KQV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}  # one thread: no contention on 2 cores
SHAKESPEARE = read_corpus(None).text
RUN_FILES = ["config.json", "log.csv", "loss.png", "model.safetensors", "tokenizer.json", "trainer.safetensors"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def command(*args) -> list[str]:
    return [sys.executable, "-m", "kqv", *map(str, args)]


def kqv(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def kqv_together(*commands, cwd=None) -> list[subprocess.CompletedProcess]:
    """Start every command at once (interpreter start-up dominates), then collect them in order."""
    procs = [
        subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=cwd)
        for args in commands
    ]
    done = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(command(*args), proc.returncode, out, err))
    return done


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`kqv gpt train --preset tiny --out D --json` on the embedded Shakespeare."""
    out = tmp_path_factory.mktemp("gpt") / "run"
    proc = kqv("gpt", "train", "--preset", "tiny", "--out", out, "--device", "cpu", "--json", cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_writes_the_run_files_and_ends_with_json(run):
    out, proc = run
    assert "Traceback" not in proc.stderr and "\r" not in proc.stdout + proc.stderr
    summary = last_json(proc.stdout)
    assert summary["command"] == "gpt train" and summary["steps"] == 50 and summary["run_dir"] == str(out)
    for key in ("best_val_loss", "final_val_loss", "tokens_per_second", "wall_seconds"):
        assert isinstance(summary[key], float) and math.isfinite(summary[key]) and summary[key] > 0, key
    first_val = summary["log"][0]["val_loss"]
    assert summary["best_val_loss"] <= summary["final_val_loss"] + 1e-9
    assert summary["best_val_loss"] < first_val - 0.3  # it learned something in 50 steps
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == RUN_FILES
    assert not list(out.rglob(".*.tmp"))
    from PIL import Image

    with Image.open(out / "loss.png") as plot:  # the loss curve is a real picture
        assert plot.format == "PNG" and plot.width > 300 and plot.height > 200
    assert summary["plot"] == str(out / "loss.png")

    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0] == "step,train_loss,val_loss,lr,tokens_per_s,elapsed_s" == ",".join(LOG_FIELDS)
    rows = read_log(out / "log.csv")
    assert [r["step"] for r in rows] == [0, 25, 50]
    assert rows[0]["lr"] == pytest.approx(learning_rate(0, 1e-3, 1e-4, 5, 50))  # tiny: lr 1e-3, warm-up 5
    assert rows[-1]["val_loss"] == pytest.approx(summary["final_val_loss"], rel=1e-5)

    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "tiny" and config["model"]["block_size"] == 32 and config["model"]["vocab_size"] == 65
    assert json.loads((out / "tokenizer.json").read_text())["kind"] == "char"


@pytest.fixture(scope="module")
def sampled(run):
    """The same `sample` twice, in two processes: once streamed, once with --json."""
    out, _ = run
    sample = ("gpt", "sample", out, "--prompt", "ROMEO:", "--tokens", 20, "--seed", 1)
    return kqv_together(sample, (*sample, "--json"))


def test_sample_with_a_seed_is_reproducible_and_json_gives_the_text(sampled):
    streamed, as_json = sampled
    for proc in sampled:
        assert proc.returncode == 0, proc.stderr
    assert streamed.stdout.startswith("ROMEO:") and len(streamed.stdout) == len("ROMEO:") + 20 + 1
    result = last_json(as_json.stdout)
    assert result["command"] == "gpt sample" and result["tokens"] == 20 and result["prompt"] == "ROMEO:"
    assert streamed.stdout == "ROMEO:" + result["text"] + "\n"  # same seed, same text, in another process


def test_sample_with_another_seed_differs(run, sampled, capsys):
    code, out, err = cli(capsys, "gpt", "sample", run[0], "--prompt", "ROMEO:", "--tokens", 20, "--seed", 1)
    assert code == 0, err
    assert out == sampled[0].stdout
    code, out, err = cli(capsys, "gpt", "sample", run[0], "--prompt", "ROMEO:", "--tokens", 20, "--seed", 2)
    assert code == 0, err
    assert out != sampled[0].stdout


def test_eval_gives_loss_and_perplexity(run, capsys):
    code, out, err = cli(capsys, "gpt", "eval", run[0], "--json", "--batches", 10)
    assert code == 0, err
    result = last_json(out)
    assert result["command"] == "gpt eval" and result["tokens"] == 10 * 16 * 32
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-9)
    assert result["loss"] == pytest.approx(last_json(run[1].stdout)["best_val_loss"], abs=0.15)


def test_eval_scores_the_whole_validation_split_by_default(run, capsys):
    code, out, err = cli(capsys, "gpt", "eval", run[0], "--json")
    assert code == 0, err
    result = last_json(out)
    meta = json.loads((Path(run[0]) / "data" / "meta.json").read_text())
    assert result["tokens"] == meta["val_tokens"] - 1  # every validation target once
    assert result["loss"] == pytest.approx(last_json(run[1].stdout)["best_val_loss"], abs=0.15)


def test_bpe_tokenizer_end_to_end(tmp_path, capsys):
    out = tmp_path / "bpe"
    code, stdout, err = cli(
        capsys, "gpt", "train", "--preset", "tiny", "--set", "tokenizer=bpe", "--set", "bpe_vocab_size=300",
        "--max-iters", 10, "--out", out, "--device", "cpu", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert last_json(stdout)["steps"] == 10
    assert json.loads((out / "tokenizer.json").read_text())["kind"] == "bpe"
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["tokenizer"] == "bpe" and config["model"]["vocab_size"] == 300
    code, stdout, err = cli(capsys, "gpt", "sample", out, "--prompt", "ROMEO: ¿qué?", "--tokens", 20, "--json")
    assert code == 0, err  # bpe takes any text, even characters the corpus never had
    assert last_json(stdout)["tokens"] == 20 and isinstance(last_json(stdout)["text"], str)
    code, stdout, err = cli(capsys, "gpt", "eval", out, "--json", "--batches", 5)
    assert code == 0, err
    result = last_json(stdout)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-9) and result["loss"] < math.log(300)


# -- bad input: exit code 2, one line on stderr, no traceback ------------------------------------------


def bad_inputs(tmp_path: Path, run_dir: Path) -> dict[str, Path]:
    """Placeholders for the table below, made on demand."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("To be, or not to be.")  # 20 characters, block_size 32
    (tmp_path / "short-val.txt").write_text(SHAKESPEARE[:320])  # 288 train tokens, but 32 validation tokens
    (tmp_path / "binary.dat").write_bytes(b"ROMEO:\x00\x01\x02\xff" * 20)
    (tmp_path / "accents.txt").write_text(SHAKESPEARE[:3000] + "café")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(run_dir / name, truncated / name)
    raw = (run_dir / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    no_state = tmp_path / "no-state"
    shutil.copytree(truncated, no_state)
    shutil.copy(run_dir / "model.safetensors", no_state / "model.safetensors")
    (tmp_path / "empty-dir").mkdir()
    return {
        "{tmp}": tmp_path,
        "{run}": run_dir,
        "{truncated}": truncated,
        "{no-state}": no_state,
        **{f"{{{p.name}}}": p for p in tmp_path.iterdir() if p.is_file()},
    }


TRAIN = ("gpt", "train", "--preset", "tiny", "--device", "cpu", "--max-iters", "1")
BAD_INPUTS = {
    "empty-corpus": ([*TRAIN, "--data", "{empty.txt}", "--out", "{tmp}/a"], "empty.txt: the corpus is empty"),
    "corpus-shorter-than-context": (
        [*TRAIN, "--data", "{short.txt}", "--out", "{tmp}/a"],
        "the training split has 18 tokens but needs more than block_size (32)",
    ),
    "validation-shorter-than-context": (
        [*TRAIN, "--data", "{short-val.txt}", "--out", "{tmp}/a"],
        "the validation split has 32 tokens but needs more than block_size (32)",
    ),
    "binary-corpus": ([*TRAIN, "--data", "{binary.dat}", "--out", "{tmp}/a"], "binary.dat: looks like a binary file"),
    "missing-corpus": ([*TRAIN, "--data", "{tmp}/nope.txt", "--out", "{tmp}/a"], "nope.txt: no such file or folder"),
    "prompt-outside-vocabulary": (
        ["gpt", "sample", "{run}", "--prompt", "ROMEO: ¿sí?", "--tokens", "5"],
        "not in the char tokenizer's vocabulary: '¿', 'í'",
    ),
    "eval-data-outside-vocabulary": (
        ["gpt", "eval", "{run}", "--data", "{accents.txt}"],
        "not in the char tokenizer's vocabulary: 'é'",
    ),
    "sample-missing-run": (["gpt", "sample", "{tmp}/no-run", "--tokens", "5"], "no-run: no such run directory"),
    "eval-missing-run": (["gpt", "eval", "{tmp}/no-run"], "no-run: no such run directory"),
    "sample-truncated-model": (
        ["gpt", "sample", "{truncated}", "--tokens", "5"],
        "model.safetensors: truncated or not a safetensors file",
    ),
    "eval-truncated-model": (["gpt", "eval", "{truncated}"], "model.safetensors: truncated or not a safetensors file"),
    "heads-do-not-divide": (
        [*TRAIN, "--set", "n_embd=30", "--set", "n_head=4", "--out", "{tmp}/a"],
        "n_embd=30 is not divisible by n_head=4",
    ),
    "unknown-key": ([*TRAIN, "--set", "nonsense=1", "--out", "{tmp}/a"], "--set nonsense: unknown key"),
    "unknown-preset": (["gpt", "train", "--preset", "nope", "--out", "{tmp}/a"], "unknown preset 'nope'"),
    "out-is-a-run": ([*TRAIN, "--out", "{run}"], "already holds a run; continue it with --resume"),
    "resume-without-trainer-state": (["gpt", "train", "--resume", "{no-state}"], "trainer.safetensors is missing"),
    "resume-not-a-run": (["gpt", "train", "--resume", "{tmp}/empty-dir"], "not a kqv run directory (no config.json)"),
    "resume-missing-dir": (["gpt", "train", "--resume", "{tmp}/no-run"], "no-run: no such run directory"),
}


def fill(args: list[str], names: dict[str, Path]) -> list[str]:
    out = []
    for arg in args:
        for key, path in names.items():
            arg = arg.replace(key, str(path))
        out.append(arg)
    return out


def assert_one_line_error(code, err, message):
    assert code == 2, err
    assert err.startswith("kqv: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, run, tmp_path, capsys):
    run_dir = run[0]
    before = snapshot(run_dir)
    args, message = BAD_INPUTS[case]
    code, _, err = cli(capsys, *fill(args, bad_inputs(tmp_path, run_dir)))
    assert_one_line_error(code, err, message)
    assert snapshot(run_dir) == before  # nothing in the existing run was touched, let alone lost
    if "{tmp}/a" in args:
        assert not (tmp_path / "a").exists()  # a run that could not start leaves no folder behind


def test_bad_input_in_real_processes(run, tmp_path):
    cases = ["missing-corpus", "sample-truncated-model"]
    names = bad_inputs(tmp_path, run[0])
    before = snapshot(run[0])
    for case, proc in zip(cases, kqv_together(*(fill(BAD_INPUTS[c][0], names) for c in cases)), strict=True):
        assert_one_line_error(proc.returncode, proc.stderr, BAD_INPUTS[case][1])
    assert snapshot(run[0]) == before


def test_a_failed_start_in_an_existing_folder_leaves_it_as_it_was(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (tmp_path / "short.txt").write_text("To be, or not to be.")
    code, _, err = cli(capsys, *TRAIN, "--data", tmp_path / "short.txt", "--out", out)
    assert code == 2, err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # no token cache left behind, nothing lost
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_run_that_fails_to_start_leaves_its_out_dir_free(tmp_path, capsys):
    out = tmp_path / "run"
    (tmp_path / "short.txt").write_text("To be, or not to be.")
    code, _, err = cli(capsys, *TRAIN, "--data", tmp_path / "short.txt", "--out", out)
    assert code == 2, err
    (tmp_path / "long.txt").write_text(SHAKESPEARE[:5000])
    code, _, err = cli(capsys, *TRAIN, "--data", tmp_path / "long.txt", "--out", out)
    assert code == 0, err


# -- a run killed for real ------------------------------------------------------------------------------


def logged_steps(run_dir: Path) -> list[int]:
    return [row["step"] for row in read_log(run_dir / "log.csv")]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_run_killed_with_sigkill_resumes_to_what_an_uninterrupted_run_gives(tmp_path):
    out, reference = tmp_path / "run", tmp_path / "reference"
    settings = (
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--set",
        "train.max_iters=120",
        "--set",
        "train.eval_interval=20",
    )
    popen = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=tmp_path)
    proc = subprocess.Popen(command("gpt", "train", *settings, "--out", out), **popen)
    uninterrupted = subprocess.Popen(command("gpt", "train", *settings, "--out", reference), **popen)  # one thread each
    try:
        deadline = time.monotonic() + 120
        while not ((out / "trainer.safetensors").is_file() and logged_steps(out)[-1:] >= [40]):
            assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no evaluation at step 40 within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()
    finally:
        for p in (proc, uninterrupted):
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    logged = logged_steps(out)
    state_step = read_safetensors(out / "trainer.safetensors")[1]["step"]
    assert logged[-1] >= 40 and state_step < 120 and abs(state_step - logged[-1]) <= 20  # killed mid-run

    resumed = kqv("gpt", "train", "--resume", out, "--device", "cpu", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at step {state_step} of 120" in resumed.stdout
    assert last_json(resumed.stdout)["steps"] == 120
    assert logged_steps(out) == list(range(0, 121, 20))  # nothing repeated, nothing lost
    assert not list(out.rglob(".*.tmp"))  # what a kill during a write leaves is gone
    for name in ("trainer.safetensors", "model.safetensors"):  # bit for bit the uninterrupted run's
        (got, got_meta), (want, want_meta) = read_safetensors(out / name), read_safetensors(reference / name)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), name
        assert got_meta["step"] == want_meta["step"]
    exact = ("step", "train_loss", "val_loss", "lr")
    assert [{k: r[k] for k in exact} for r in read_log(out / "log.csv")] == [
        {k: r[k] for k in exact} for r in read_log(reference / "log.csv")
    ]
