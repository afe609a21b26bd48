"""Run directories (PITFALL 19): one writer at a time, and a start killed before its first checkpoint is
never in the way — a fresh start takes the folder over, `--resume` starts it again from step 0."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kqv.fileio
from kqv.errors import UserError
from kqv.runs.directory import InUse, claim_new, claim_resume, run_status
from kqv.runs.lock import LOCK_NAME, RunLock, in_use_message
from kqv.runs.weights import read_safetensors
from kqv.train.gpt_run import train_gpt
from tests.train.writes import patch_every_writer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SETTINGS = ["train.max_iters=6", "train.eval_interval=3", "train.eval_iters=2"]


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def corpus(corpus_20k) -> str:
    return str(corpus_20k)


def train(corpus: str, out: Path, **kwargs):
    return train_gpt("tiny", corpus, str(out), overrides=SETTINGS, device="cpu", say=quiet, **kwargs)


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(corpus, run_dir)
    return run_dir


# -- the lock -------------------------------------------------------------------------------------------


def test_a_lock_is_held_once_names_its_holder_and_leaves_no_file(tmp_path):
    lock = RunLock.take(tmp_path)
    assert lock is not None and (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert RunLock.take(tmp_path) is None  # a second open file description cannot have it, even in this process
    assert f"(PID {os.getpid()})" in in_use_message(tmp_path)
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    again = RunLock.take(tmp_path)
    assert again is not None
    again.release()


HOLD = """
import sys, time
from pathlib import Path
from kqv.runs.lock import RunLock
from tests.train.writes import patch_every_writer
lock = RunLock.take(Path(sys.argv[1]))
print("held" if lock else "refused", flush=True)
time.sleep(60)
"""


def test_a_lock_held_by_a_killed_process_is_free_again(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert RunLock.take(tmp_path) is None
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert (tmp_path / LOCK_NAME).exists()  # the file stays behind after SIGKILL, but nobody holds it
    lock = RunLock.take(tmp_path)
    assert lock is not None
    lock.release()


def test_a_second_writer_is_refused_naming_the_pid(finished, corpus, tmp_path):
    lock = RunLock.take(finished)
    try:
        with pytest.raises(UserError, match=rf"in use by another kqv process \(PID {os.getpid()}\)"):
            train_gpt(resume=str(finished), device="cpu", say=quiet)
        busy = tmp_path / "busy"
        busy.mkdir()
        held = RunLock.take(busy)
        with pytest.raises(InUse, match="in use by another kqv process"):
            train(corpus, busy)
        held.release()
    finally:
        lock.release()
    assert not (finished / LOCK_NAME).exists()


def test_the_default_folder_moves_on_past_one_in_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "gpt").mkdir(parents=True)
    other = RunLock.take(tmp_path / "runs" / "gpt")  # another process starting a run there
    try:
        claim = claim_new(None, "gpt")
        assert claim.path == Path("runs") / "gpt-2"
        claim.release()
    finally:
        other.release()


# -- a start that never reached its first trainer state -----------------------------------------------


def started_copy(finished: Path, to: Path) -> Path:
    """What a start killed after config.json (and maybe the step-0 weights) but before trainer.safetensors leaves."""
    to.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (to / name).write_bytes((finished / name).read_bytes())
    (to / "data").mkdir()
    (to / "data" / ".train.bin.k1ll3d.tmp").write_bytes(b"\0" * 100)  # a killed write of the token cache
    (to / ".config.json.k1ll3d.tmp").write_bytes(b"{")
    return to


def test_a_run_without_trainer_state_resumes_as_a_fresh_start_of_its_config(finished, tmp_path):
    run_dir = started_copy(finished, tmp_path / "run")
    assert run_status(run_dir) == "started"
    result, _, _ = train_gpt(resume=str(run_dir), device="cpu", say=quiet)
    assert result.steps == 6
    (a, _), (b, _) = (
        read_safetensors(finished / "trainer.safetensors"),
        read_safetensors(run_dir / "trainer.safetensors"),
    )
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)  # the run an uninterrupted start made
    assert not list(run_dir.rglob(".*.tmp")) and not (run_dir / LOCK_NAME).exists()


def test_a_fresh_start_takes_over_a_started_folder_and_keeps_other_files(finished, corpus, tmp_path):
    run_dir = started_copy(finished, tmp_path / "run")
    (run_dir / "notes.txt").write_text("mine")
    said = []
    train_gpt("tiny", corpus, str(run_dir), overrides=SETTINGS, device="cpu", say=said.append)
    assert any("stopped before its first checkpoint; starting afresh" in line for line in said)
    assert run_status(run_dir) == "run" and (run_dir / "notes.txt").read_text() == "mine"
    assert not list(run_dir.rglob(".*.tmp"))


def test_trained_weights_without_a_trainer_state_are_never_thrown_away(finished, corpus, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (run_dir / name).write_bytes((finished / name).read_bytes())  # best weights of step 6
    assert run_status(run_dir) == "run"
    with pytest.raises(UserError, match="already holds a run"):
        train(corpus, run_dir)
    with pytest.raises(UserError, match="trainer.safetensors is missing"):
        claim_resume(str(run_dir), "gpt", ())
    assert (run_dir / "model.safetensors").read_bytes() == (finished / "model.safetensors").read_bytes()


def test_a_finished_run_is_refused_as_out_and_left_as_it_was(finished, corpus):
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="already holds a run; continue it with --resume"):
        train(corpus, finished)
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before


# -- failures and interrupts during a start -----------------------------------------------------------


class Stop(BaseException):
    pass


def stop_at_write(monkeypatch, name: str, exc: BaseException) -> None:
    """Raise `exc` when the run writes `name` (before it is written)."""
    real = kqv.fileio.atomic_write_bytes

    def write(path, data):
        if Path(path).name == name:
            raise exc
        return real(path, data)

    patch_every_writer(monkeypatch, write)


@pytest.mark.parametrize("name", ["train.bin", "config.json", "model.safetensors", "trainer.safetensors"])
def test_a_full_disk_during_a_start_leaves_no_half_made_run(corpus, tmp_path, monkeypatch, name):
    full = kqv.fileio.write_error(tmp_path / name, OSError(errno.ENOSPC, "No space left on device"))
    stop_at_write(monkeypatch, name, full)
    with pytest.raises(UserError, match="the disk is full"):
        train(corpus, tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()  # the folders this start made are gone too


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Stop], ids=["ctrl-c", "other"])
def test_an_interrupt_after_config_json_leaves_a_folder_that_resumes(
    corpus, finished, tmp_path, monkeypatch, interrupt
):
    stop_at_write(monkeypatch, "trainer.safetensors", interrupt())
    run_dir = tmp_path / "run"
    with pytest.raises(interrupt):
        train(corpus, run_dir)
    monkeypatch.undo()
    if interrupt is KeyboardInterrupt:  # an interrupt keeps what a resume needs
        assert run_status(run_dir) == "started" and (run_dir / "config.json").is_file()
        result, _, _ = train_gpt(resume=str(run_dir), device="cpu", say=quiet)
        assert result.steps == 6
    else:  # anything else before the first trainer state: the start is undone
        assert not run_dir.exists()


def test_an_interrupt_before_config_json_leaves_nothing(corpus, tmp_path, monkeypatch):
    stop_at_write(monkeypatch, "tokenizer.json", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train(corpus, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_two_starts_in_one_folder_at_once_the_second_is_refused(corpus, tmp_path):
    env = {**os.environ, "KQV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    args = [sys.executable, "-m", "kqv", "gpt", "train", "--preset", "tiny", "--data", corpus, "--out", str(out)]
    args += ["--set", "tokenizer=bpe", "--set", "bpe_vocab_size=300", *(x for s in SETTINGS for x in ("--set", s))]
    longer = ["--set", "train.max_iters=60"]  # still training when the second one starts
    first = subprocess.Popen([*args, *longer], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not (out / LOCK_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    out_1, err_1 = first.communicate(timeout=300)
    assert first.returncode == 0, err_1
    assert read_safetensors(out / "trainer.safetensors")[1]["step"] == 60  # the first run's, not replaced
    assert second.returncode == 2 and "Traceback" not in second.stderr
    message = f"kqv: error: {out} is in use by another kqv process (PID {first.pid}); wait for it to finish or stop it"
    assert second.stderr.strip().splitlines() == [message]
    resumed = subprocess.run([*args[:5], "--resume", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr  # the first run is whole
