import gzip

import numpy as np
import pytest

from kqv.data.digits import load_idx_dir
from kqv.data.idx import read_idx
from kqv.errors import UserError
from tests.conftest import FASHION_MNIST, FASHION_MNIST_WHY, MNIST, MNIST_WHY, require_dir
from tests.data.idx_files import idx_bytes, write_idx_set


@pytest.mark.parametrize("gz", [False, True])
def test_reads_plain_and_gzip_files(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(idx_bytes(array)) if gz else idx_bytes(array))
    out = read_idx(path, expect_ndim=3)
    assert out.shape == (2, 3, 4) and np.array_equal(out, array)


def test_reads_other_types_big_endian(tmp_path):
    array = np.array([[1, -2], [300, 40000]], dtype=">i4")
    (tmp_path / "i.idx").write_bytes(idx_bytes(array, type_code=0x0C))
    assert read_idx(tmp_path / "i.idx").tolist() == [[1, -2], [300, 40000]]


def test_folder_split_uses_last_images_as_validation(tmp_path):
    data = load_idx_dir(write_idx_set(tmp_path / "d", n_train=60, n_test=20), validation_size=15)
    assert (len(data.train.labels), len(data.validation.labels), len(data.test.labels)) == (45, 15, 20)
    assert data.image_shape == (8, 8) and data.train.x.shape == (45, 64)
    assert 0.0 <= data.train.x.min() and data.train.x.max() <= 1.0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b"\x08\x03" + b[2:], "not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], "not an IDX file"),
        (lambda b: b[:-5], "truncated or corrupt"),
        (lambda b: b + b"\x00", "truncated or corrupt"),
        (lambda b: b[:6], "header is truncated"),
        (lambda b: b"", "not an IDX file"),
    ],
)
def test_damaged_files_give_clear_errors(tmp_path, damage, message):
    folder = write_idx_set(tmp_path / "d")
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError, match=message) as err:
        load_idx_dir(folder, validation_size=10)
    assert "train-images-idx3-ubyte" in str(err.value)


def test_labels_file_given_where_images_belong(tmp_path):
    folder = write_idx_set(tmp_path / "d")
    (folder / "t10k-images-idx3-ubyte").write_bytes((folder / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(UserError, match="expected an image file"):
        load_idx_dir(folder, validation_size=10)


def test_image_and_label_counts_must_match(tmp_path):
    folder = write_idx_set(tmp_path / "d")
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(59, dtype=np.uint8)))
    with pytest.raises(UserError, match="holds 60 images but train-labels-idx1-ubyte holds 59 labels"):
        load_idx_dir(folder, validation_size=10)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_idx_dir(tmp_path / "absent")
    folder = write_idx_set(tmp_path / "d")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"):
        load_idx_dir(folder, validation_size=10)


def test_validation_size_must_leave_training_images(tmp_path):
    with pytest.raises(UserError, match="must be less than the 60 training images"):
        load_idx_dir(write_idx_set(tmp_path / "d"), validation_size=60)


@pytest.mark.parametrize(
    ("folder", "why"),
    [(MNIST, MNIST_WHY), (FASHION_MNIST, FASHION_MNIST_WHY)],
)
def test_real_mnist_format_sets_load(folder, why):
    data = load_idx_dir(require_dir(folder, why))
    assert (len(data.train.labels), len(data.validation.labels), len(data.test.labels)) == (50_000, 10_000, 10_000)
    assert data.image_shape == (28, 28) and data.num_classes == 10
    assert np.array_equal(np.unique(data.test.labels), np.arange(10))
