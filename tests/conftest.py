import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The larger data sets some tests read, and what to do when one is absent (the test skips, saying so).
MNIST = Path(os.environ.get("KQV_MNIST_DIR") or SHARED_DATA / "mnist")
MNIST_WHY = (
    "it needs the original MNIST's four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or .gz, as the MNIST distribution publishes them): "
    "put them in a folder and set KQV_MNIST_DIR to it; `kqv digits train --data FOLDER` trains on the same files"
)
FASHION_MNIST = Path(os.environ.get("KQV_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist")
FASHION_MNIST_WHY = (
    "it needs Fashion-MNIST: `apt install dataset-fashion-mnist` puts it there, or set KQV_FASHION_MNIST_DIR to a "
    "folder of its four IDX files; `kqv digits train --data FOLDER` trains on them"
)
MULTI30K = Path(os.environ.get("KQV_MULTI30K_DIR") or SHARED_DATA / "multi30k")
MULTI30K_WHY = (
    "it needs Multi30k's line-aligned files (val.en.gz and val.de.gz from data/task1/raw of the multi30k/dataset "
    "repository; research and teaching only): set KQV_MULTI30K_DIR to their folder; "
    "`kqv translate train --src-file FOLDER/train.de.gz --tgt-file FOLDER/train.en.gz` trains on them"
)

os.environ.setdefault("KQV_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download (set before huggingface_hub is imported)


def require_dir(path: Path, why: str) -> Path:
    """Skip (saying why) when a data folder that a test needs is not on this machine."""
    if not path.is_dir():
        pytest.skip(f"{path} is absent: {why}")  # `why`: what the test needs and how to provide it
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors run fastest on one thread; two threads on a busy 2-core machine can be 10× slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
