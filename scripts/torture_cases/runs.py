"""Torture part: run directories — signals at random moments, two writers, damaged files, a full disk, bad --set.

Every scenario compares with what an undisturbed run gives. A run "survives" when:
- killed (SIGKILL), interrupted (SIGINT) or terminated (SIGTERM) at a random moment, start-up included, it
  printed at most the one line `kqv: interrupted` / `kqv: terminated` (exit 130 / 143), and continuing it
  (`--resume`, or a fresh start when nothing resumable was left) ends with a trainer state and log bit for
  bit those of an uninterrupted run;
- a second writer on a live run directory is refused with one line naming the first one's PID;
- a flipped bit or a truncation anywhere in any run file is refused with one `kqv: error:` line, or is
  harmless: the run then gives exactly the undamaged result (a token cache is re-encoded, a log rewritten);
- NaN weights, edited trainer states and config.json fields out of range are refused with one line that
  never echoes another file's contents;
- a full disk (a small tmpfs, or a file-size limit where no tmpfs can be mounted) is one line, and leaves
  no half-made run folder;
- bad `--set` values are one line, exit 2, and no folder.
The runs are tiny (preset tiny on 20,000 characters, a few steps); signals and CLI cases run as real processes,
two at a time, damaged files in this process through the library (a UserError is the one line).
"""

import json
import os
import pathlib
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from kqv.data.text import read_corpus
from kqv.errors import UserError
from kqv.families.gpt import GPT_FAMILY
from kqv.runs.weights import read_safetensors, write_safetensors
from kqv.train.gpt_run import train_gpt

ENV = {**os.environ, "KQV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
STEPS, EVERY = 8, 4  # a run: 8 steps, evaluated (and checkpointed) at 0, 4 and 8
SETTINGS = ["--preset", "tiny", "--device", "cpu", "--set", f"train.max_iters={STEPS}"]
SETTINGS += ["--set", f"train.eval_interval={EVERY}", "--set", "train.eval_iters=2"]
EXACT = ("step", "train_loss", "val_loss", "lr")  # the log's other columns are timings
Row = tuple[str, int, int, list[str]]


def kqv(*args, cwd: pathlib.Path, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kqv", *map(str, args)],
        capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL, **popen,
    )  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess, words: str = "") -> str | None:
    """None when `proc` ended with exit 2 and exactly one `kqv: error:` line holding `words`; else what went wrong."""
    lines = proc.stderr.strip().splitlines()
    if "Traceback" in proc.stdout + proc.stderr:
        return f"a traceback: {lines[-1:]}"
    if proc.returncode != 2 or len(lines) != 1 or not lines[0].startswith("kqv: error:"):
        return f"exit {proc.returncode}, stderr {lines[-3:]}"
    return None if words in lines[0] else f"the error does not say {words!r}: {lines[0]}"


def fingerprint(run_dir: pathlib.Path) -> dict:
    """What must be bit-identical between two runs: every tensor of the trainer state and the best weights, the
    step, the data position, the best loss, and the log's losses."""
    out = {}
    for name in ("trainer.safetensors", "model.safetensors"):
        tensors, meta = read_safetensors(run_dir / name)
        out[name] = {k: v.numpy().tobytes() for k, v in tensors.items()}
        out[name + " meta"] = {k: meta.get(k) for k in ("step", "sampler", "best_val", "val_loss")}
    out["log"] = [{k: row[k] for k in EXACT} for row in read_safetensors(run_dir / "trainer.safetensors")[1]["log"]]
    return out


def reference_run(work: pathlib.Path, corpus: pathlib.Path) -> tuple[pathlib.Path, dict, float]:
    """An uninterrupted run in a subprocess -> (its folder, its fingerprint, its wall time)."""
    run_dir = work / "reference"
    started = time.perf_counter()
    proc = kqv("gpt", "train", *SETTINGS, "--data", corpus, "--out", run_dir, cwd=work)
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run failed: {proc.stderr.strip()[-300:]}")
    return run_dir, fingerprint(run_dir), time.perf_counter() - started


# --- signals at random moments ---------------------------------------------------------------------------------

SIGNALS = {"SIGKILL": (signal.SIGKILL, None, -signal.SIGKILL), "SIGINT": (signal.SIGINT, "kqv: interrupted", 130),
           "SIGTERM": (signal.SIGTERM, "kqv: terminated", 143)}  # fmt: skip


def signal_trial(work: pathlib.Path, corpus: pathlib.Path, name: str, delay: float, expected: dict) -> str | None:
    """Start a run, send the signal after `delay` s, continue it -> None if it survived, else what went wrong."""
    signum, line, code = SIGNALS[name]
    run_dir = work / f"signal-{name}-{delay:.2f}"
    args = [sys.executable, "-m", "kqv", "gpt", "train", *SETTINGS, "--data", str(corpus), "--out", str(run_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=work)
    time.sleep(delay)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    where = f"{name} at {delay:.2f} s"
    if "Traceback" in err:
        return f"{where}: a traceback: {lines[-8:]}"
    if proc.returncode == 0:
        pass  # finished before the signal arrived
    elif proc.returncode != code or (lines != [] if line is None else len(lines) != 1 or not lines[0].startswith(line)):
        return f"{where}: exit {proc.returncode}, stderr {lines[-2:]}"
    if (run_dir / "trainer.safetensors").is_file() or (run_dir / "config.json").is_file():
        again = kqv("gpt", "train", "--resume", run_dir, cwd=work)  # resumes, or restarts its saved config
    else:
        again = kqv("gpt", "train", *SETTINGS, "--data", corpus, "--out", run_dir, cwd=work)
    if again.returncode != 0:
        return f"{where}: continuing failed (exit {again.returncode}): {again.stderr.strip().splitlines()[-1:]}"
    if fingerprint(run_dir) != expected:
        return f"{where}: the continued run differs from the uninterrupted one"
    if list(run_dir.rglob(".*.tmp")) or (run_dir / ".kqv-lock").exists():
        return f"{where}: temporaries or a lock file left behind"
    shutil.rmtree(run_dir)
    return None


def signals(work: pathlib.Path, corpus: pathlib.Path, quick: bool, expected: dict, seconds: float) -> list[Row]:
    rng = random.Random(20261201)
    trials = 24 if quick else 60
    plan = [(name, rng.uniform(0.05, seconds * 1.1)) for name in SIGNALS for _ in range(trials // len(SIGNALS))]
    with ThreadPoolExecutor(2) as pool:  # two at a time: each process runs one thread
        notes = list(pool.map(lambda p: signal_trial(work, corpus, p[0], p[1], expected), plan))
    rows = []
    for name in SIGNALS:
        mine = [n for (s, _), n in zip(plan, notes, strict=True) if s == name]
        rows.append((f"runs: {name} at a random moment, then resume", len(mine), mine.count(None), _notes(mine)))
    return rows


# --- two writers ------------------------------------------------------------------------------------------------


def two_writers(work: pathlib.Path, corpus: pathlib.Path) -> Row:
    run_dir = work / "two-writers"
    longer = ["--set", "train.max_iters=40"]
    first = subprocess.Popen(
        [sys.executable, "-m", "kqv", "gpt", "train", *SETTINGS, *longer, "--data", str(corpus), "--out", str(run_dir),
         "--set", "tokenizer=bpe", "--set", "bpe_vocab_size=300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=work,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (run_dir / ".kqv-lock").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    attempts = {
        "a second fresh start": ["gpt", "train", *SETTINGS, "--data", corpus, "--out", run_dir],
        "a resume beside it": ["gpt", "train", "--resume", run_dir],
    }
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(attempts, pool.map(lambda a: kqv(*a, cwd=work), attempts.values()), strict=True))
    _, err = first.communicate(timeout=300)
    notes = []
    for what, proc in done.items():
        problem = one_error_line(proc, f"in use by another kqv process (PID {first.pid})")
        notes.append(f"{what}: {problem}" if problem else None)
    ok = first.returncode == 0 and read_safetensors(run_dir / "trainer.safetensors")[1]["step"] == 40
    notes.append(None if ok else f"the first run was disturbed: exit {first.returncode} {err.strip()[-200:]}")
    return ("runs: two writers on one run directory", len(notes), notes.count(None), _notes(notes))


# --- damaged files ------------------------------------------------------------------------------------------------

RUN_FILES = ("config.json", "tokenizer.json", "model.safetensors", "trainer.safetensors", "log.csv",
             "data/train.bin", "data/val.bin", "data/meta.json")  # fmt: skip


def continue_in_process(run_dir: pathlib.Path) -> str:
    """Sample from the run and resume it to the end -> "refused: <line>" or "done"."""
    try:
        GPT_FAMILY.load(run_dir)
        train_gpt(resume=str(run_dir), device="cpu", say=lambda _: None)
    except UserError as exc:
        text = str(exc)
        return f"refused: {text}" if "\n" not in text else f"a message of {text.count(chr(10)) + 1} lines"
    return "done"


def damaged(work: pathlib.Path, stopped: pathlib.Path, expected: dict, quick: bool) -> list[Row]:
    """Bit flips and truncations of every file of a run stopped at step 4, each in a fresh copy."""
    rng = random.Random(7)
    flips = 6 if quick else 40
    rows = []
    for what in ("bit flips", "truncations"):
        notes = []
        for name in RUN_FILES:
            size = (stopped / name).stat().st_size
            for _ in range(flips if what == "bit flips" else 3):
                copy = work / "damaged"
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(stopped, copy)
                raw = bytearray((copy / name).read_bytes())
                if what == "bit flips":
                    at = rng.randrange(size)
                    raw[at] ^= 1 << rng.randrange(8)
                    label = f"{name} bit at byte {at}"
                else:
                    at = rng.randrange(size)
                    raw = raw[:at]
                    label = f"{name} cut to {at} bytes"
                (copy / name).write_bytes(bytes(raw))
                outcome = continue_in_process(copy)
                if outcome == "done":
                    notes.append(None if fingerprint(copy) == expected else f"{label}: loaded, and gave other numbers")
                else:
                    notes.append(None if outcome.startswith("refused: ") else f"{label}: {outcome}")
        rows.append((f"runs: {what} in every run file", len(notes), notes.count(None), _notes(notes)))
    return rows


def restamp(run_dir: pathlib.Path) -> None:
    """After an edit of config.json: record its new sha256 in both tensor files (an adversary's consistent edit)."""
    import hashlib

    digest = hashlib.sha256((run_dir / "config.json").read_bytes()).hexdigest()
    for name in ("model.safetensors", "trainer.safetensors"):
        tensors, meta = read_safetensors(run_dir / name)
        write_safetensors(run_dir / name, tensors, {**meta, "config_sha256": digest})


def edited(work: pathlib.Path, stopped: pathlib.Path) -> Row:
    """Files edited consistently (valid checksums): NaN weights, out-of-range state, config fields."""

    def nan_in(name: str, key_prefix: str):
        def edit(d: pathlib.Path):
            tensors, meta = read_safetensors(d / name)
            key = next(k for k in tensors if k.startswith(key_prefix) and tensors[k].is_floating_point())
            tensors[key] = tensors[key].clone().fill_(float("nan"))
            write_safetensors(d / name, tensors, meta)

        return edit

    def state(change):
        def edit(d: pathlib.Path):
            tensors, meta = read_safetensors(d / "trainer.safetensors")
            change(tensors, meta)
            write_safetensors(d / "trainer.safetensors", tensors, meta)

        return edit

    def config(change):
        def edit(d: pathlib.Path):
            info = json.loads((d / "config.json").read_text())
            change(info)
            (d / "config.json").write_text(json.dumps(info))
            restamp(d)

        return edit

    cases = {
        "NaN weights in model.safetensors": nan_in("model.safetensors", ""),
        "NaN weights in trainer.safetensors": nan_in("trainer.safetensors", "model."),
        "NaN AdamW moments": nan_in("trainer.safetensors", "optim."),
        "step -5": state(lambda t, m: m.update(step=-5)),
        "step 1,000,000": state(lambda t, m: m.update(step=1_000_000)),
        "no rng.torch": state(lambda t, m: t.pop("rng.torch")),
        "no best_val": state(lambda t, m: m.pop("best_val")),
        "no sampler generator": state(lambda t, m: m["sampler"].pop("generator")),
        "sampler generator of the wrong length": state(lambda t, m: m["sampler"]["generator"].pop()),
        "block_size 10^12": config(lambda i: i["model"].update(block_size=10**12)),
        "data path /etc/passwd": config(lambda i: i["data"].update(path="/etc/passwd")),
        "no data table": config(lambda i: i.pop("data")),
        "n_layer a long string": config(lambda i: i["model"].update(n_layer="x" * 10_000)),
    }
    secret = (
        pathlib.Path("/etc/passwd").read_text(errors="replace").splitlines()[:1]
        if os.path.exists("/etc/passwd")
        else []
    )
    notes = []
    for what, edit in cases.items():
        copy = work / "edited"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(stopped, copy)
        edit(copy)
        outcome = continue_in_process(copy)
        if not outcome.startswith("refused: "):
            notes.append(f"{what}: {outcome}")
        elif len(outcome) > 400 or any(line and line in outcome for line in secret):
            notes.append(f"{what}: the message echoes too much: {outcome[:120]}…")
        else:
            notes.append(None)
    return ("runs: NaN weights, edited states and config fields", len(notes), notes.count(None), _notes(notes))


# --- a full disk ------------------------------------------------------------------------------------------------


def full_disk(work: pathlib.Path, corpus: pathlib.Path) -> Row:
    """A start on a disk that fills up: one line, exit 2, no half-made folder (tmpfs; else a file-size limit)."""
    disk = work / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], capture_output=True)
    limit = None
    if mounted.returncode != 0:  # no tmpfs here: a file-size limit makes writes fail the same way (EFBIG)
        limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))  # noqa: E731
    notes = []
    try:
        for size in ("small", "large"):
            out = disk / f"run-{size}"
            extra = ["--set", "n_embd=64"] if size == "large" else []
            proc = kqv("gpt", "train", *SETTINGS, *extra, "--data", corpus, "--out", out, cwd=work, preexec_fn=limit)
            problem = one_error_line(proc, "cannot write there")
            if problem is None and out.exists():
                problem = "refused, but the run folder was left behind"
            notes.append(f"{size} model: {problem}" if problem else None)
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(disk)], capture_output=True)
    how = "a 160 KB tmpfs" if mounted.returncode == 0 else "a 150 KB file-size limit (no tmpfs could be mounted)"
    return (f"runs: a full disk ({how})", len(notes), notes.count(None), _notes(notes))


# --- bad --set values -----------------------------------------------------------------------------------------------

BAD_SETS = {
    "seed=2^64": ("seed=18446744073709551616", "seed must be"),
    "seed=-1": ("seed=-1", "seed must be"),
    "n_embd=1000000": ("n_embd=1000000", "needs at least"),
    "batch_size=100000000": ("batch_size=100000000", "needs at least"),
    "eval_iters=100000000": ("eval_iters=100000000", "needs at least"),
    "block_size=10^12": ("block_size=1000000000000", "needs at least"),
    "eps=inf": ("eps=inf", "eps must be"),
    "lr=nan": ("lr=nan", "lr must be"),
    "vocab_size=5": ("vocab_size=5", "vocab_size"),
    "n_embd=100 with n_head=3": ("n_embd=100", "not divisible"),
}


def bad_sets(work: pathlib.Path, corpus: pathlib.Path) -> Row:
    def attempt(item):
        name, (setting, words) = item
        out = work / f"bad-{name.replace('=', '-').replace(' ', '-')}"
        extra = ["--set", "n_head=3"] if "n_head" in name else []
        proc = kqv("gpt", "train", *SETTINGS, "--set", setting, *extra, "--data", corpus, "--out", out, cwd=work)
        problem = one_error_line(proc, words)
        if problem is None and out.exists():
            problem = "refused, but the run folder was left behind"
        return f"{name}: {problem}" if problem else None

    with ThreadPoolExecutor(2) as pool:
        notes = list(pool.map(attempt, BAD_SETS.items()))
    return ("runs: bad --set values", len(notes), notes.count(None), _notes(notes))


# --- the part --------------------------------------------------------------------------------------------------------


def _notes(notes: list[str | None]) -> list[str]:
    return [n for n in notes if n is not None]


def scenarios(quick: bool, work: pathlib.Path) -> list[Row]:
    corpus = work / "corpus.txt"
    corpus.write_text(read_corpus(None).text[:20_000], encoding="utf-8")
    torch.set_num_threads(1)
    _, expected, seconds = reference_run(work, corpus)
    stopped = work / "stopped"  # a run stopped at step 4, to be resumed to step 8
    if kqv("gpt", "train", *SETTINGS, "--data", corpus, "--out", stopped, "--stop-at", EVERY, cwd=work).returncode:
        raise RuntimeError("could not make the stopped run")
    rows = signals(work, corpus, quick, expected, seconds)
    rows.append(two_writers(work, corpus))
    rows += damaged(work, stopped, expected, quick)
    rows.append(edited(work, stopped))
    rows.append(full_disk(work, corpus))
    rows.append(bad_sets(work, corpus))
    return rows


if __name__ == "__main__":  # this part alone: python scripts/torture_cases/runs.py [--full]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for row in scenarios("--full" not in sys.argv, pathlib.Path(tmp)):
            print(row)
