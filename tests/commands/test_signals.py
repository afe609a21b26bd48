"""Ctrl-C and SIGTERM, at start-up or mid-run: one line (`kqv: interrupted`, exit 130; `kqv: terminated`,
exit 143; once training has begun, with the step it saved and the command that continues it), no traceback,
and a run directory that `--resume` finishes."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kqv.data.text import read_corpus
from kqv.runs.weights import read_safetensors

ENV = {**os.environ, "KQV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
SIGNALS = {"SIGINT": (signal.SIGINT, "kqv: interrupted", 130), "SIGTERM": (signal.SIGTERM, "kqv: terminated", 143)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "shakespeare-20k.txt"
    path.write_text(read_corpus(None).text[:20_000], encoding="utf-8")
    return path


def start(corpus: Path, out: Path) -> subprocess.Popen:
    args = ["gpt", "train", "--preset", "tiny", "--device", "cpu", "--data", str(corpus), "--out", str(out)]
    args += ["--set", "train.max_iters=300", "--set", "train.eval_interval=10", "--set", "train.eval_iters=2"]
    return subprocess.Popen([sys.executable, "-m", "kqv", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {path.name} within {seconds} s"
        time.sleep(0.005)


@pytest.mark.parametrize("moment", ["start-up", "mid-run"])
@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_signal_is_one_line_and_the_run_resumes(corpus, tmp_path, name, moment):
    signum, line, code = SIGNALS[name]
    out = tmp_path / "run"
    proc = start(corpus, out)
    try:
        # start-up: config.json is written, the first trainer state is not; mid-run: after a checkpoint
        wait_for(out / ("config.json" if moment == "start-up" else "trainer.safetensors"), proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = err.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1, err
    # mid-run (and a start-up signal that lands once training has begun): the step saved, and how to go on
    saved = re.fullmatch(
        re.escape(line) + rf"; saved step (\d+) of 300, in {re.escape(str(out))}; "
        rf"continue with `kqv gpt train --resume {re.escape(str(out))}`",
        lines[0],
    )
    assert lines[0] == line if moment == "start-up" and saved is None else saved, lines[0]
    if saved:
        assert read_safetensors(out / "trainer.safetensors")[1]["step"] == int(saved[1])
    assert not (out / ".kqv-lock").exists() and not list(out.rglob(".*.tmp"))
    resumed = subprocess.run(
        [sys.executable, "-m", "kqv", "gpt", "train", "--resume", str(out), "--stop-at", "20"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert read_safetensors(out / "trainer.safetensors")[1]["step"] == 20


def test_ctrl_c_waits_out_an_import_and_is_sent_again(monkeypatch):
    """A Ctrl-C that lands inside an import (torch's C++ start-up cannot pass a KeyboardInterrupt on) is held
    back and sent again 50 ms later; anywhere else it is a KeyboardInterrupt at once."""
    from kqv import cli

    sent = []
    monkeypatch.setattr(cli.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    inside = {}
    code = compile("import sys\ninside['frame'] = sys._getframe()", "<frozen importlib._bootstrap>", "exec")
    exec(code, {"inside": inside})  # a frame as the import machinery's own code has
    cli._interrupt(signal.SIGINT, inside["frame"])  # held back: no exception
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent == [(os.getpid(), signal.SIGINT)]
    with pytest.raises(KeyboardInterrupt):
        cli._interrupt(signal.SIGINT, sys._getframe())
