import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("KQV_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download (set before huggingface_hub is imported)


def require_dir(path: Path, why: str) -> Path:
    """Skip (saying why) when a data folder that a test needs is not on this machine."""
    if not path.is_dir():
        pytest.skip(f"{path} is absent: {why}")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors run fastest on one thread; two threads on a busy 2-core machine can be 10× slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
