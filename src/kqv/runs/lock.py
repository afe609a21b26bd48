"""One writer per run directory: an advisory lock held for the life of the training process.

    RUN_DIR/.kqv-lock    holds the PID of the process that trains into RUN_DIR

The lock is `flock(LOCK_EX | LOCK_NB)` on that file. The kernel drops it when the process
exits for any reason — a clean end, an error, Ctrl-C, SIGKILL, a crash — so a lock is
never left stale (a file left by a killed process is locked by no one), and the PID
written in the file is only there to name the holder in the message the next process gets:

    kqv: error: runs/gpt is in use by another kqv process (PID 4242); wait for it to finish or stop it

Taking the lock is `RunLock.take(path)`; it returns None when another process holds it.
`release()` removes the file, so a finished run leaves no lock file behind.
A lock file whose folder was removed and made again under it (a failed start cleaning up
while a second process waited) is noticed by comparing inodes, and taken afresh.
Where `fcntl` does not exist (Windows) no lock is taken.
"""

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".kqv-lock"


class RunLock:
    """An exclusive lock on one run directory; `release()` (or process exit) gives it up."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self._fd = path, fd

    @classmethod
    def take(cls, run_dir: Path) -> "RunLock | None":
        """Lock `run_dir` (which must exist) for this process; None if another process holds it."""
        path = Path(run_dir) / LOCK_NAME
        if fcntl is None:
            return cls(path, None)
        for _ in range(10):  # the folder may be removed and made again while we wait; then try again
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return cls(path, fd)
            os.close(fd)  # we locked a file that was unlinked meanwhile: the lock is worth nothing
        return None

    def release(self) -> None:
        """Remove the lock file (still holding the lock: a waiter that opened it notices), then unlock."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def holder(run_dir: Path) -> str:
    """'PID 1234' of the process that wrote the lock file, or 'unknown PID' if it cannot be read."""
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "unknown PID"
    return f"PID {text}" if text.isdigit() else "unknown PID"


def in_use_message(run_dir: Path) -> str:
    return f"{run_dir} is in use by another kqv process ({holder(run_dir)}); wait for it to finish or stop it"
