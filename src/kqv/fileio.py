"""Files written so that a crash never leaves a half-written one behind, and why a write failed, in one line."""

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from kqv.errors import UserError

_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space and try again",
    errno.EDQUOT: "the disk quota is used up; free some space and try again",
    errno.EROFS: "the file system is read-only; choose a folder you can write to",
    errno.EFBIG: "the file is larger than this process may write (a file-size limit, ulimit -f)",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.EISDIR: "a folder is in the way where the file belongs; move it aside",
    errno.ENOTDIR: "a file is in the way where a folder belongs; move it aside",
}


def write_error(path: str | Path, exc: OSError) -> UserError:
    """A UserError naming `path` and what to do about `exc` (a full disk, a read-only folder, …)."""
    why = _ADVICE.get(exc.errno, exc.strerror or str(exc))
    return UserError(f"{path}: cannot write there ({why})")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename.

    A reader sees the old file or the new one, never a partial one. Any OS error (a full
    disk, a read-only folder, a folder where the file belongs) is a UserError naming the
    file, and the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_folder(
    target: str | Path, files: dict[str, bytes], more: Callable[[Path], object] | None = None
) -> Path:
    """Write `files` (and whatever `more(folder)` writes) into a new folder `target`, all or nothing.

    Everything goes into a temporary folder beside `target`, which is renamed to `target` once
    complete; `target` must not exist or be an empty folder (else a UserError)."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target}: already exists and is not empty; choose a new folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        if more is not None:
            more(staging)
        os.chmod(staging, 0o777 & ~_umask())
        os.replace(staging, target)  # an empty target folder is replaced; a non-empty one was refused above
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(target, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def remove_temporaries(*folders: Path) -> int:
    """Delete the `.NAME.*.tmp` files a killed atomic write leaves in these folders; -> how many."""
    removed = 0
    for folder in folders:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    removed += 1
    return removed
