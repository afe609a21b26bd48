"""Reading the IDX format of MNIST and Fashion-MNIST, with every header checked.

An IDX file is a 4-byte magic number — two zero bytes, a type code, the number
of dimensions — then one big-endian int32 per dimension, then the data in C
order. Images are `0x00000803` (uint8, 3 dims: N, rows, cols); labels are
`0x00000801` (uint8, 1 dim: N). Files may be gzip-compressed.
"""

import gzip
from pathlib import Path

import numpy as np

from kqv.errors import UserError

_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path, expect_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (plain or gzip) into an array of its stated shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read it ({exc}); is it a complete IDX or .gz file?") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise UserError(
            f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'}; "
            "expected 0000 followed by a type code such as 08 and the number of dimensions)"
        )
    dtype, ndim = _TYPES[raw[2]], raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        kind = {1: "a label", 3: "an image"}.get(expect_ndim, f"a {expect_ndim}-d")
        raise UserError(f"{path}: IDX file has {ndim} dimensions, expected {kind} file with {expect_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: IDX header is truncated ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes; "
            "it is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx(directory: Path, stem: str) -> Path:
    """`stem` (e.g. 'train-images-idx3-ubyte') in `directory`, plain or .gz."""
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise UserError(f"{directory}: no {stem} or {stem}.gz; --data expects a folder of MNIST-format IDX files")


def load_idx_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, rows, cols) uint8 and labels (N,) for prefix 'train' or 't10k'."""
    images_path = find_idx(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, expect_ndim=3)
    labels = read_idx(labels_path, expect_ndim=1)
    if len(images) != len(labels):
        raise UserError(
            f"{directory}: {images_path.name} holds {len(images)} images but "
            f"{labels_path.name} holds {len(labels)} labels"
        )
    if len(images) == 0:
        raise UserError(f"{images_path}: holds no images")
    return images, labels
