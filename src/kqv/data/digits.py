"""Handwritten digits for the scratch network: embedded 8×8 digits or MNIST-format files.

Every loader returns a `DigitData`: train / validation / test sets of flattened
images in [0, 1] with integer labels, plus what `kqv digits predict` needs to
make a user's picture look like the training data.

- Embedded (default): scikit-learn's bundled copy of the UCI optical-recognition
  digits (1,797 images of 8×8 pixels, 17 grey levels, no download). Split per
  class with a fixed seed into 70 % train, 10 % validation, 20 % test, so every
  split has the same class proportions.
- `--data DIR`: MNIST-format IDX files. The last `validation_size` (10,000) training
  images become the validation set, as in Nielsen's book (50,000 / 10,000 / 10,000
  for MNIST); t10k is the test set.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from kqv.data.idx import load_idx_pair
from kqv.errors import UserError
from kqv.scratch.train import Labeled

EMBEDDED = "embedded"
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


@dataclass
class DigitData:
    train: Labeled
    validation: Labeled
    test: Labeled
    image_shape: tuple[int, int]
    source: str  # "embedded" or the folder the IDX files came from
    # How a user's image is normalised to look like these: the size of the box the
    # drawing is scaled into and how it is centred (see kqv.data.images).
    preprocess: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(max(self.train.labels.max(), self.test.labels.max())) + 1

    @property
    def num_inputs(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices of each part, drawn class by class so each part keeps the class mix."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.round(bounds * len(idx)).astype(int)
        for part, lo, hi in zip(parts, np.r_[0, cuts[:-1]], cuts, strict=True):
            part.append(idx[lo:hi])
    return [np.sort(np.concatenate(p)) for p in parts]


def load_embedded() -> DigitData:
    bunch = load_digits()
    x = bunch.data.astype(np.float64) / 16.0  # (1797, 64), ink = 1
    labels = bunch.target.astype(np.int64)  # (1797,)
    train, val, test = stratified_split(labels, SPLIT_FRACTIONS, SPLIT_SEED)
    return DigitData(
        train=Labeled(x[train], labels[train]),
        validation=Labeled(x[val], labels[val]),
        test=Labeled(x[test], labels[test]),
        image_shape=(8, 8),
        source=EMBEDDED,
        preprocess={"box": 8, "center": "box"},
    )


def load_idx_dir(directory: str | Path, validation_size: int = 10_000) -> DigitData:
    directory = Path(directory)
    if not directory.exists():
        raise UserError(f"{directory}: no such folder; --data expects a folder of MNIST-format IDX files")
    if not directory.is_dir():
        raise UserError(f"{directory}: not a folder; --data expects a folder of MNIST-format IDX files")
    train_images, train_labels = load_idx_pair(directory, "train")
    test_images, test_labels = load_idx_pair(directory, "t10k")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise UserError(
            f"{directory}: training images are {train_images.shape[1:]} but test images are {test_images.shape[1:]}"
        )
    if not 0 <= validation_size < len(train_images):
        raise UserError(
            f"--validation-size {validation_size} must be less than the {len(train_images)} training images"
        )
    rows, cols = train_images.shape[1:]
    n_train = len(train_images) - validation_size

    def as_inputs(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), rows * cols).astype(np.float64) / 255.0  # (N, rows·cols)

    x_all, labels_all = as_inputs(train_images), train_labels.astype(np.int64)
    return DigitData(
        train=Labeled(x_all[:n_train], labels_all[:n_train]),
        validation=Labeled(x_all[n_train:], labels_all[n_train:]),
        test=Labeled(as_inputs(test_images), test_labels.astype(np.int64)),
        image_shape=(rows, cols),
        source=str(directory.resolve()),
        # MNIST digits were scaled into a 20×20 box and centred by centre of mass in 28×28.
        preprocess={"box": round(min(rows, cols) * 20 / 28), "center": "mass"},
    )


def load_digits_data(data: str | Path | None = None, validation_size: int = 10_000) -> DigitData:
    """The embedded digits when `data` is None or 'embedded', else IDX files in that folder."""
    if data is None or str(data) == EMBEDDED:
        return load_embedded()
    return load_idx_dir(data, validation_size)
