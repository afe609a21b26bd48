import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("KQV_NO_PROGRESS", "1")


def require_dir(path: Path, why: str) -> Path:
    """Skip (saying why) when a data folder that a test needs is not on this machine."""
    if not path.is_dir():
        pytest.skip(f"{path} is absent: {why}")
    return path
