"""Torture part: `kqv gpt train --data X` on corpora that hang, loop, hold nothing, or are one enormous line.

Each scenario runs `kqv gpt train --data X --max-iters 1 --set eval_iters=1 --out DIR` in a subprocess
with a deadline. It survives when it finishes in time with the one correct outcome: trained (exit 0, a run
folder with its model), or refused (exit 2, one stderr line `kqv: error: …` naming the problem, and no run
folder left behind); never a "Traceback". BPE scenarios add `--set tokenizer=bpe --set bpe_vocab_size=300`.
"""

import os
import pathlib
import random
import string
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from kqv.data.text import read_corpus

BPE = ["--set", "tokenizer=bpe", "--set", "bpe_vocab_size=300"]
REFUSE_SECONDS = 60  # start-up is 2-3 s; a reader that hangs on a FIFO would never end
TRAINED = None  # the outcome expected instead of a refusal's words


def run_train(work: pathlib.Path, name: str, data: pathlib.Path, expected: str | None, timeout: int, extra=()) -> str:
    """What went wrong with `kqv gpt train` on `data`, or "" when it ended as expected within `timeout` seconds.

    `expected`: words the one error line must hold, or TRAINED."""
    out = work / f"run-{name}"
    command = [sys.executable, "-m", "kqv", "gpt", "train", "--data", str(data), "--max-iters", "1"]
    command += ["--set", "eval_iters=1", "--out", str(out), *extra]
    try:
        done = subprocess.run(
            command,
            cwd=work,
            env={**os.environ, "KQV_NO_PROGRESS": "1"},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"{name}: still running after {timeout} s (a hang?)"
    lines = done.stderr.strip().splitlines()
    if "Traceback" in done.stdout + done.stderr:
        return f"{name}: a traceback (exit {done.returncode}): {lines[-1:]}"
    if expected is TRAINED:
        if done.returncode != 0 or not (out / "model.safetensors").is_file():
            return f"{name}: expected a trained run, got exit {done.returncode}: {' | '.join(lines[-2:])}"
        return ""
    if done.returncode != 2 or len(lines) != 1 or not lines[0].startswith("kqv: error:"):
        return f"{name}: expected one 'kqv: error:' line and exit 2, got exit {done.returncode}: {lines[-3:]}"
    if expected not in lines[0]:
        return f"{name}: the error does not say {expected!r}: {lines[0]}"
    if out.exists():
        return f"{name}: refused, but left the run folder {out} behind"
    return ""


def fifo(work: pathlib.Path, quick: bool) -> str:
    os.mkfifo(work / "pipe.txt")
    return run_train(work, "fifo", work / "pipe.txt", "is a FIFO", REFUSE_SECONDS)


def dev_zero(work: pathlib.Path, quick: bool) -> str:
    return run_train(work, "dev-zero", pathlib.Path("/dev/zero"), "is a character device", REFUSE_SECONDS)


def symlink_loop(work: pathlib.Path, quick: bool) -> str:
    (work / "loop.txt").symlink_to("loop.txt")
    return run_train(work, "symlink-loop", work / "loop.txt", "symlink loop", REFUSE_SECONDS)


def link_to_parent(work: pathlib.Path, quick: bool) -> str:
    folder = work / "looping-folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Some text to learn from.\n" * 100)
    (folder / "sub" / "up").symlink_to("..")
    return run_train(work, "link-to-parent", folder, "symlink loop", REFUSE_SECONDS)


def empty_file(work: pathlib.Path, quick: bool) -> str:
    (work / "empty.txt").write_bytes(b"")
    return run_train(work, "empty-file", work / "empty.txt", "empty", REFUSE_SECONDS)


def binary_file(work: pathlib.Path, quick: bool) -> str:
    (work / "binary.txt").write_bytes(random.Random(0).randbytes(4096))
    return run_train(work, "binary-file", work / "binary.txt", "binary file", REFUSE_SECONDS)


def too_short(work: pathlib.Path, quick: bool) -> str:
    (work / "short.txt").write_text("a")
    return run_train(work, "too-short", work / "short.txt", "needs more than block_size", REFUSE_SECONDS)


def fifo_in_folder(work: pathlib.Path, quick: bool) -> str:
    folder = work / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("Some text to learn from.\n" * 100)
    os.mkfifo(folder / "b.txt")
    return run_train(work, "fifo-in-folder", folder, "b.txt: is a FIFO", REFUSE_SECONDS)


def no_space_run(work: pathlib.Path, quick: bool) -> str:
    n = 200_000 if quick else 1_000_000  # before the fix BPE took 21 s for 200k and over 4 minutes for 1M
    (work / "no-space.txt").write_text("".join(random.Random(0).choices(string.ascii_letters, k=n)))
    return run_train(work, f"no-space-{n}", work / "no-space.txt", TRAINED, 60 if quick else 300, BPE)


def long_line(work: pathlib.Path, quick: bool) -> str:
    n = 2_000_000 if quick else 20_000_000
    line = read_corpus(None).text.replace("\n", " ")
    (work / "line.txt").write_text((line * (n // len(line) + 1))[:n])
    return run_train(work, f"one-line-{n // 1_000_000}MB", work / "line.txt", TRAINED, 90 if quick else 600, BPE)


SCENARIOS = [  # the long ones first, so that the short ones fill in beside them
    ("corpora: BPE on one long line", long_line),
    ("corpora: BPE on a run without spaces", no_space_run),
    ("corpora: a FIFO as --data", fifo),
    ("corpora: /dev/zero as --data", dev_zero),
    ("corpora: a symlink to itself", symlink_loop),
    ("corpora: a folder with a link to its parent", link_to_parent),
    ("corpora: an empty file", empty_file),
    ("corpora: a binary file", binary_file),
    ("corpora: a one-character corpus", too_short),
    ("corpora: a FIFO among a folder's .txt files", fifo_in_folder),
]


def scenarios(quick: bool, work: pathlib.Path) -> list[tuple[str, int, int, list[str]]]:
    """Run this part's scenarios; -> rows (scenario name, tried, survived, notes on each failure).

    Two at a time: each is a subprocess that mostly waits for its own start-up."""

    def run(scenario) -> str:
        folder = work / scenario.__name__
        folder.mkdir(parents=True, exist_ok=True)
        return scenario(folder, quick)

    with ThreadPoolExecutor(max_workers=2) as pool:
        notes = list(pool.map(run, [scenario for _, scenario in SCENARIOS]))
    return [
        (name, 1, 0 if note else 1, [note] if note else []) for (name, _), note in zip(SCENARIOS, notes, strict=True)
    ]


if __name__ == "__main__":
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        for row in scenarios("--full" not in sys.argv, pathlib.Path(tmp)):
            print(*row, sep="  ")
        print(f"{time.perf_counter() - started:.1f} s")
