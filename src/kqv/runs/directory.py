"""Run directories shared by every kind of training run: claiming, checking and reopening them.

A run directory holds config.json (with "kind": "gpt" or "translation"), the tokenizer,
the weights, the trainer state and the log (kqv.train.checkpoint describes the files).

A folder is in one of three states (`run_status`):

    "absent"   nothing of kqv's in it (or no folder at all)
    "started"  a start that never wrote its first trainer state: config.json, tokenizer.json,
               data/, a step-0 model.safetensors — killed at start-up, nothing trained yet
    "run"      trainer.safetensors is there (or trained weights, or an imported model)

A run is not a run until it can resume, so a "started" folder is never in the way: a fresh
start into it replaces it, and `--resume` on it starts again from step 0 with its saved
settings (the same seed, so the same run an uninterrupted start would have made).

One process at a time trains into a folder: `claim_new` and `claim_resume` take its
lock (kqv.runs.lock) and keep it until the training ends; a second process gets
one line naming the PID that holds it. Both also clear the temporaries that a killed
write leaves (`.NAME.*.tmp`).
"""

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kqv.errors import Terminated, UserError
from kqv.fileio import remove_temporaries, write_error
from kqv.runs.config_file import read_config
from kqv.runs.lock import LOCK_NAME, RunLock, in_use_message
from kqv.runs.weights import read_metadata

# what a start writes before its first trainer state: cleared when a new start takes the folder over
START_FILES = ("config.json", "tokenizer.json", "model.safetensors", "log.csv", "loss.png", "valid.tsv", "test.tsv")


def run_status(path: Path) -> str:
    """ "absent", "started" (killed before its first trainer state) or "run" (see the module docstring)."""
    if not path.is_dir():
        return "absent"
    if (path / "trainer.safetensors").exists():
        return "run"
    if (path / "model.safetensors").exists():
        meta = read_metadata(path / "model.safetensors")
        if meta is None or meta.get("step", 0) != 0 or "imported_from" in meta:
            return "run"  # trained (or unreadable) weights, or an imported model: never thrown away
        try:
            if "imported_from" in json.loads((path / "config.json").read_bytes()):
                return "run"
        except (OSError, ValueError, TypeError):
            pass
    if any((path / name).exists() for name in START_FILES) or (path / "data").is_dir():
        return "started"
    return "absent"


def first_missing(path: Path) -> Path | None:
    """The outermost of `path` and its parents that does not exist yet (None if `path` exists)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            return missing
        missing = p
    return missing


def clear_start(path: Path) -> None:
    """Remove what a start writes (START_FILES, data/), leaving anything else in the folder alone."""
    for name in START_FILES:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    shutil.rmtree(path / "data", ignore_errors=True)
    remove_temporaries(path)


class InUse(UserError):
    """Another process holds the run directory's lock."""


@dataclass
class Claim:
    """A run directory this process trains into: its lock, and what a failed start must remove."""

    path: Path
    lock: RunLock
    fresh: bool  # a new start (False: a resume, which never removes anything)
    created: Path | None = None  # the outermost folder this start made, if it made one
    took_over: bool = False  # the folder held a start that never reached its first trainer state

    def failed(self, interrupted: bool) -> None:
        """After an error or an interrupt: leave a resumable folder, or none at all.

        A run with a trainer state can resume; an interrupted start whose config.json is written
        can restart from it (`--resume`). Anything else a fresh start made is removed.
        """
        if not self.fresh or (self.path / "trainer.safetensors").is_file():
            return
        if interrupted and (self.path / "config.json").is_file():
            return
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
        elif self.path.is_dir():
            clear_start(self.path)

    def release(self) -> None:
        self.lock.release()


@contextmanager
def holding(claims: list[Claim]):
    """Run a training with `claims` (filled in once it has claimed its run directory), then release them.

    On the way out with an exception, each claim tidies up (`Claim.failed`), and an allocation failure
    from torch becomes one line."""
    try:
        yield claims
    except BaseException as exc:
        for claim in claims:
            claim.failed(interrupted=isinstance(exc, KeyboardInterrupt | Terminated))
        if out_of_memory(exc):
            first = (str(exc).splitlines() or [""])[0][:200]
            raise UserError(f"out of memory: {first}; choose a smaller model or batch") from None
        raise
    finally:
        for claim in claims:
            claim.release()


def _lock(path: Path, fresh: bool) -> tuple[RunLock, Path | None]:
    """Make `path` (if needed) and lock it -> (lock, the outermost folder made); UserError if it is in use."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: a file is in the way; a run directory is a folder, choose another")
    created = first_missing(path) if fresh else None
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock.take(path)
    except OSError as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise write_error(path, exc) from None
    if lock is None:  # (even if this call made the folder: the other process is using it now)
        raise InUse(in_use_message(path))
    return lock, created


def _claim_fresh(path: Path) -> Claim | None:
    """Lock `path` for a new start; None when it holds a run (checked before touching it, and again under the lock)."""
    if run_status(path) == "run":
        if (path / LOCK_NAME).exists():  # a run still training there gets the more useful message
            lock, _ = _lock(path, fresh=False)
            lock.release()
        return None
    lock, created = _lock(path, fresh=True)
    status = run_status(path)
    if status == "run":
        lock.release()
        return None
    if status == "started":
        clear_start(path)
    remove_temporaries(path, path / "data")
    return Claim(path, lock, fresh=True, created=created, took_over=status == "started")


def claim_new(out: str | None, default: str) -> Claim:
    """Lock a folder for a new run: --out, which must not hold a run, or runs/DEFAULT (runs/DEFAULT-2, … if taken
    or in use). A folder that holds only a start killed before its first checkpoint is taken over."""
    if out is not None:
        run_dir = Path(out)
        claim = _claim_fresh(run_dir)
        if claim is None:
            raise UserError(
                f"--out {run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out"
            )
        return claim
    base = Path("runs") / default
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            claim = _claim_fresh(candidate)
        except InUse:
            continue  # another process is starting a run there: take the next name
        if claim is not None:
            return claim
    raise UserError(f"{base}: 9,999 runs of that name already exist; choose a folder with --out")


def claim_resume(resume: str, kind: str, needed: tuple[str, ...], lock: bool = True) -> tuple[Claim | None, dict, bool]:
    """The run to continue, locked, with its config.json -> (claim, info, has_state).

    has_state is False for a start killed before its first trainer state: it restarts from step 0
    with its saved settings. `lock=False` (the other processes under torchrun) only reads.
    """
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: no such run directory")
    claim = None
    if lock:
        run_lock, _ = _lock(run_dir, fresh=False)
        claim = Claim(run_dir, run_lock, fresh=False)
    try:
        info = read_config(run_dir, kind)
        if "imported_from" in info:
            raise UserError(f"--resume {run_dir}: an imported model, not a training run; it has nothing to resume")
        has_state = (run_dir / "trainer.safetensors").exists()
        if not has_state and run_status(run_dir) == "run":  # trained weights, but the state to continue is gone
            raise UserError(
                f"--resume {run_dir}: trainer.safetensors is missing, so the run cannot continue exactly "
                "(model.safetensors still holds its best weights for sampling)"
            )
        for name in ("tokenizer.json", *needed, *(("trainer.safetensors",) if has_state else ())):
            if (run_dir / name).is_dir():
                raise UserError(f"{run_dir / name}: a folder is where this file belongs; move it aside")
            if not (run_dir / name).is_file():
                raise UserError(f"--resume {run_dir}: {name} is missing, so the run cannot continue exactly")
        if lock:
            remove_temporaries(run_dir, run_dir / "data")
            if not has_state:  # a step-0 leftover of the killed start: made again from the same seed
                for name in ("model.safetensors", "log.csv", "loss.png"):
                    (run_dir / name).unlink(missing_ok=True)
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    return claim, info, has_state


def out_of_memory(exc: BaseException) -> bool:
    """Whether an exception from torch is an allocation failure (CPU or GPU)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )
