"""Multi-process training with torchrun (kqv.train.distributed), on the CPU with gloo.

Two processes with the global batch of one must train like one: the same per-step losses
and gradient norms, the same evaluations, and a checkpoint either can resume.

Tolerance: 1e-5 relative. Each rank's loss is the mean over half the rows and DDP averages
the two halves' gradients, so the sums run in another order than in one process: float32
rounding (2^-24 ≈ 6e-8 relative) per operation, which the observed differences stay near
(≈1e-7 over 12 AdamW steps). Real mistakes are orders of magnitude larger: a rank reading
the wrong rows changes the loss by ~1e-2, gradients summed instead of averaged double the
gradient norm, a skipped or extra all-reduce changes the norm by ~10 %.

Only rank 0 may write: an audit hook (sys.addaudithook, installed through a sitecustomize
module on PYTHONPATH) records every file the processes open for writing, rename, create or
delete under the test's folder, with the writer's RANK.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kqv
from kqv.config import GPTConfig, TrainConfig
from kqv.data.text import BatchSampler, fixed_batches, read_corpus
from kqv.errors import UserError
from kqv.models.gpt import GPT
from kqv.runs.weights import read_safetensors
from kqv.train.gpt_run import train_gpt
from kqv.train.loop import Trainer, read_log

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS, HALF = 12, 6
OVERRIDES = [f"train.max_iters={STEPS}", f"train.eval_interval={HALF}", "train.eval_iters=2", "train.grad_accum=2"]
REL = 1e-5
TIMEOUT = 120  # seconds; a hung collective must fail the test, not the CI job

RECORDER = """
import os, sys

_root, _log = os.environ["KQV_TEST_WRITE_ROOT"], os.environ["KQV_TEST_WRITE_LOG"]
_who = os.environ.get("RANK", "launcher")
_fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _under_root(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    return os.path.abspath(os.fsdecode(path)).startswith(_root)


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE)
    elif event == "os.rename":  # also os.replace
        path, writes = args[1], True
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
        path, writes = args[0], True
    else:
        return
    if writes and _under_root(path):
        os.write(_fd, f"{_who} {event} {os.fsdecode(path)}\\n".encode())


sys.addaudithook(_hook)
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "shakespeare-40k.txt"
    path.write_text(read_corpus(None).text[:40_000], encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def recorder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recorder")
    (folder / "sitecustomize.py").write_text(RECORDER)
    return folder


def quiet(_: str) -> None:
    pass


def train(corpus: str, out: Path, stop_at: int | None = None) -> dict:
    _, _, summary = train_gpt("tiny", corpus, str(out), overrides=OVERRIDES, device="cpu", stop_at=stop_at, say=quiet)
    return summary


def resume(run_dir: Path) -> dict:
    return train_gpt(resume=str(run_dir), device="cpu", say=quiet)[2]


def torchrun(args: list[str], root: Path, recorder: Path, n: int = 2) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`python -m torch.distributed.run --standalone --nproc_per_node=n -m kqv gpt train ARGS` -> (process, writes)."""
    log = root.parent / f"{root.name}-writes.txt"
    log.unlink(missing_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # one thread per process: two processes share the two cores
        "KQV_NO_PROGRESS": "1",
        "PYTHONPATH": os.pathsep.join([str(recorder), os.environ.get("PYTHONPATH", "")]),
        "KQV_TEST_WRITE_ROOT": str(root),
        "KQV_TEST_WRITE_LOG": str(log),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    proc = subprocess.run(
        [*cmd, "-m", "kqv", "gpt", "train", "--device", "cpu", *args],
        capture_output=True, text=True, env=env, timeout=TIMEOUT,
    )  # fmt: skip
    writes = log.read_text().splitlines() if log.exists() else []
    return proc, writes


def summary_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # rank 0 alone prints the JSON summary
    return json.loads(lines[0])


def assert_same_steps(got: dict, expected: dict, steps: slice) -> None:
    assert got["step_losses"] == pytest.approx(expected["step_losses"][steps], rel=REL)
    assert got["step_grad_norms"] == pytest.approx(expected["step_grad_norms"][steps], rel=REL)


def assert_same_run_files(got: Path, expected: Path) -> None:
    """The finished runs' logs, weights and AdamW moments agree (within REL, the weights within 1e-5 absolute)."""
    log_got, log_expected = read_log(got / "log.csv"), read_log(expected / "log.csv")
    assert [r["step"] for r in log_got] == [r["step"] for r in log_expected] == [0, HALF, STEPS]
    for a, b in zip(log_got, log_expected, strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            assert a[key] == pytest.approx(b[key], rel=REL), (a["step"], key)
    (t_got, m_got), (t_expected, m_expected) = (read_safetensors(d / "trainer.safetensors") for d in (got, expected))
    assert t_got.keys() == t_expected.keys()
    assert not any(k.startswith(("model.module.", "model._orig_mod.")) for k in t_got)  # unwrapped names
    for key in t_got:
        if not key.startswith("rng."):
            torch.testing.assert_close(t_got[key], t_expected[key], rtol=REL, atol=1e-5, msg=key)
    assert m_got["step"] == m_expected["step"] == STEPS
    assert m_got["sampler"] == m_expected["sampler"]  # the data position does not depend on the process count


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory) -> tuple[dict, Path]:
    """The reference: one process, the whole global batch (8 rows × 2 micro-steps)."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    summary = train(corpus, run_dir)
    assert summary["steps"] == STEPS and summary["processes"] == 1
    return summary, run_dir


def test_two_processes_train_like_one_and_one_process_resumes_them(corpus, recorder, single, tmp_path):
    reference, reference_dir = single
    run_dir = tmp_path / "run"
    args = ["--preset", "tiny", "--data", corpus, "--out", str(run_dir), "--stop-at", str(HALF), "--json"]
    proc, writes = torchrun([*args, *[f"--set={o}" for o in OVERRIDES]], tmp_path, recorder)
    two = summary_of(proc)
    assert two["processes"] == 2 and two["steps"] == HALF
    assert_same_steps(two, reference, slice(0, HALF))
    assert proc.stdout.count("step     0 ") == 1  # one progress line per evaluation: rank 0 prints
    writers = {line.split()[0] for line in writes}
    assert writers == {"0"}, writes  # rank 0 wrote every file; rank 1 and the launcher none
    assert {Path(line.split()[2]).name for line in writes} >= {"config.json", "trainer.safetensors", "log.csv"}
    assert read_safetensors(run_dir / "trainer.safetensors")[1]["processes"] == 2

    one = resume(run_dir)  # 2 processes -> 1
    assert one["processes"] == 1 and one["steps"] == STEPS
    assert_same_steps(one, reference, slice(HALF, STEPS))
    assert_same_run_files(run_dir, reference_dir)


def test_two_processes_resume_a_one_process_run(corpus, recorder, single, tmp_path):
    reference, reference_dir = single
    run_dir = tmp_path / "run"
    first = train(corpus, run_dir, stop_at=HALF)
    assert_same_steps(first, reference, slice(0, HALF))
    proc, writes = torchrun(["--resume", str(run_dir), "--json"], tmp_path, recorder)  # 1 process -> 2
    two = summary_of(proc)
    assert two["processes"] == 2 and two["steps"] == STEPS
    assert_same_steps(two, reference, slice(HALF, STEPS))
    assert_same_run_files(run_dir, reference_dir)
    assert writes and {line.split()[0] for line in writes} == {"0"}, writes


@pytest.mark.parametrize("case", ["every-rank", "rank-0"])
def test_bad_input_gives_one_line_from_rank_0(corpus, recorder, single, tmp_path, case):
    """An error every rank meets (a batch that does not split over 2 processes), and one that rank 0
    meets and hands on to the others (--out holds a run already): rank 0 alone reports it."""
    if case == "every-rank":
        watched = tmp_path / "run"
        args, message = ["--out", str(watched), "--set", "batch_size=7"], "batch_size 7 cannot be split evenly over 2"
    else:
        watched = single[1]
        args, message = ["--out", str(watched)], "already holds a run"
    proc, writes = torchrun(["--preset", "tiny", "--data", corpus, *args], watched, recorder)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "kqv: error" in line]
    assert len(errors) == 1, proc.stderr  # torchrun then adds its own report of the stopped processes
    assert message in errors[0] and errors[0].startswith("kqv: error: ")
    assert re.search(r"exitcode\s*:\s*2\b", proc.stderr)  # rank 0's code 2: torchrun's root cause
    frames = [line for line in proc.stderr.splitlines() if line.strip().startswith('File "')]
    # no traceback through kqv's own code: frames are matched by the package's real folder, not a path
    # fragment (a clone in a folder named kqv has torchrun's frames under kqv/.venv/…)
    package = str(Path(kqv.__file__).resolve().parent) + os.sep
    assert not [f for f in frames if package in f], proc.stderr
    assert not writes
    if case == "every-rank":
        assert not watched.exists()


def test_the_shards_of_n_processes_make_up_one_process_batches():
    tokens = torch.arange(1000).numpy()
    whole = BatchSampler(tokens, 8, 6, seed=3)
    shards = [BatchSampler(tokens, 8, 6, seed=3, shard=(r, 3)) for r in range(3)]
    for _ in range(4):
        x, y = whole.next_batch()
        parts = [s.next_batch() for s in shards]
        assert torch.equal(torch.cat([p.x for p in parts]), x) and torch.equal(torch.cat([p.y for p in parts]), y)
    assert all(s.state_dict() == whole.state_dict() for s in shards)  # the data position does not depend on N
    evals = [fixed_batches(tokens, 8, 6, 2, seed=4, shard=(r, 2)) for r in range(2)]
    for i, (x, _) in enumerate(fixed_batches(tokens, 8, 6, 2, seed=4)):
        assert torch.equal(torch.cat([evals[0][i].x, evals[1][i].x]), x)
    with pytest.raises(ValueError, match="does not split batch_size 6 evenly"):
        BatchSampler(tokens, 8, 6, seed=3, shard=(0, 4))


def test_a_trainer_started_as_several_processes_without_a_group_refuses(monkeypatch, tmp_path):
    """`torchrun … -m kqv translate train` would train N copies writing the same files: one line instead."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="started as 2 processes"):
        Trainer(GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)), TrainConfig(),
                None, {}, tmp_path, say=quiet)  # fmt: skip


def test_ranks_after_0_draw_dropout_masks_from_seed_rank_and_step(monkeypatch):
    """Rank 0 keeps the run's RNG stream (the one a checkpoint saves); rank r > 0 reseeds every step,
    so its masks differ from rank 0's and a resume at any step draws them again."""
    from kqv.train import distributed

    torch.manual_seed(0)
    state = torch.get_rng_state()
    distributed.seed_rank(1337, 5)  # rank 0 (no process group): untouched
    assert torch.equal(torch.get_rng_state(), state)

    def draw(rank: int, step: int) -> torch.Tensor:
        monkeypatch.setattr(distributed, "rank", lambda: rank)
        distributed.seed_rank(1337, step)
        return torch.rand(4)

    assert torch.equal(draw(1, 5), draw(1, 5))
    assert not torch.equal(draw(1, 5), draw(1, 6)) and not torch.equal(draw(1, 5), draw(2, 5))
