"""Reading a user's files safely: only regular files, never a FIFO that blocks, a device that never ends or a loop.

Every path a user gives (a corpus, a folder of them, a parallel corpus) is checked before it is opened
and again once it is open (without blocking): a FIFO, a character or block device, a socket, a symlink
loop or a link to nothing is one line naming the path and what it is. A folder is walked through its
links, refusing a link back to a folder that holds it. Text must be UTF-8 (gzip is undone); a message
names the byte and offset that is not, and never quotes the file.
"""

import errno
import gzip
import os
import stat
import zlib
from pathlib import Path

from kqv.errors import UserError


def stat_input(path: Path, missing: str) -> os.stat_result:
    """`os.stat(path)` (through links), or a UserError naming `path`: `missing` says what to give instead."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(
                f"{path}: is a symlink loop (following its links never reaches a file); "
                "point it at a real file or folder"
            ) from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                raise UserError(f"{path}: is a symlink to {os.readlink(path)}, which does not exist") from None
            raise UserError(f"{path}: {missing}") from None
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None


_NOT_FILES = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # 0 on Windows, which has no FIFOs to block on
_OPEN_FLAGS = os.O_RDONLY | _NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def not_a_file(path: Path, mode: int, advice: str) -> UserError:
    """The error for reading `path` whole when its `st_mode` is not a regular file's."""
    kind = _NOT_FILES.get(stat.S_IFMT(mode), "not a regular file")
    return UserError(f"{path}: is {kind}, not a regular file; {advice}")


def read_regular_file(path: Path, advice: str = "give a regular file") -> bytes:
    """All bytes of a regular file; a FIFO, a device, a socket or a folder is a UserError, never a hang.

    Checked twice: by `stat` before opening (opening a device can have effects), and on the open
    file, opened without blocking, in case the path changed in between (a FIFO with no writer
    blocks an ordinary open forever, and /dev/zero never ends).
    """
    mode = stat_input(path, "no such file").st_mode
    if not stat.S_ISREG(mode):
        raise not_a_file(path, mode, advice)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with open(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_a_file(path, mode, advice)
        if _NONBLOCK:
            os.set_blocking(fd, True)
        try:
            return f.read()
        except OSError as exc:
            raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def corpus_files(folder: Path) -> list[Path]:
    """The `*.txt` files under `folder`, in order of their relative paths; links are followed, hidden names skipped.

    A link to a folder that contains it (a loop) or a `.txt` name that is not a regular file is a
    UserError: skipping it would silently train on less than the folder holds.
    """
    found = []  # (relative path, path)
    stack = [(folder, "", {_identity(stat_input(folder, "no such folder"))})]  # (folder, relative, folders it is in)
    while stack:
        directory, relative, ancestors = stack.pop()
        try:
            names = sorted(entry.name for entry in os.scandir(directory))
        except OSError as exc:
            raise UserError(f"{directory}: cannot list the folder ({exc.strerror or exc})") from None
        for name in names:
            if name.startswith("."):
                continue
            path, rel = directory / name, f"{relative}{name}"
            try:
                st = os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP or name.endswith(".txt"):
                    stat_input(path, "cannot be read")  # raises the error that explains why
                continue  # a broken link not named .txt is ignored, like any other file not named .txt
            if stat.S_ISDIR(st.st_mode):
                if _identity(st) in ancestors:
                    raise UserError(
                        f"{path}: is a symlink loop: it leads back to {path.resolve()}, a folder that holds it, "
                        "so the corpus would never end; remove the link"
                    )
                stack.append((path, f"{rel}/", ancestors | {_identity(st)}))
            elif name.endswith(".txt"):
                if not stat.S_ISREG(st.st_mode):
                    raise not_a_file(path, st.st_mode, "a corpus folder's .txt files must be text files: move it out")
                found.append((rel, path))
    return [path for _, path in sorted(found)]


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def read_plain_or_gzip(path: Path, advice: str) -> bytes:
    """A regular file's bytes, gunzipped when it starts with gzip's magic number."""
    raw = read_regular_file(path, advice)
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error):  # gzip.BadGzipFile is an OSError; its message quotes the file's bytes
        raise UserError(f"{path}: the gzip file is truncated or damaged") from None
    return raw


def read_text_file(path: Path) -> str:
    """One UTF-8 file (a leading byte-order mark is dropped; gzip is undone)."""
    raw = read_plain_or_gzip(path, "give a UTF-8 text file or a folder of .txt files (save a stream to a file first)")
    binary = f"{path}: looks like a binary file, not UTF-8 text"
    if b"\x00" in raw:
        raise UserError(f"{binary} (it holds NUL bytes; UTF-16 text must be converted to UTF-8 first)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{binary} (byte 0x{raw[exc.start]:02x} at offset {exc.start} is not valid UTF-8); "
            "convert text in other encodings to UTF-8, e.g. with iconv"
        ) from None
