"""Make a user's picture of a digit look like the training data.

The networks learn from centred, size-normalised, light-on-dark digits. A photo
or a drawing from a paint program is none of those, so before classifying it:

1. greyscale in [0, 1]; transparency is flattened onto a background that
   contrasts with the strokes;
2. polarity: the border's median is the background; a light background is
   inverted so that ink is bright, as in the training data;
3. the background level is subtracted and the ink stretched to [0, 1];
4. the drawing is cropped to its ink and scaled, keeping its aspect ratio, so its
   longer side fills `box` pixels (20 of 28 for MNIST, all 8 of 8 for the
   embedded digits);
5. it is placed on the training image canvas, centred by its bounding box or,
   as MNIST was, by its centre of mass.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kqv.errors import UserError

INK_THRESHOLD = 0.2  # of the stretched range: what counts as ink when cropping


def _to_grey(img: Image.Image) -> np.ndarray:
    """(H, W) floats in [0, 1], with any transparency flattened."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0  # (H, W, 4)
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])  # (H, W)
        alpha = rgba[..., 3]
        if alpha.min() < 1.0:
            strokes = float(np.average(grey, weights=alpha)) if alpha.sum() > 0 else 0.0
            background = 1.0 if strokes < 0.5 else 0.0
            return alpha * grey + (1.0 - alpha) * background
        return grey
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def normalise_digit(grey: np.ndarray, image_shape: tuple[int, int], box: int, center: str) -> np.ndarray:
    """(H, W) greyscale in [0, 1], any polarity -> (rows, cols) bright ink on black."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark on light: invert so ink is bright
        grey, background = 1.0 - grey, 1.0 - background
    ink = np.clip(grey - background, 0.0, None)
    if ink.max() < 0.05:
        raise UserError("the image is blank: no strokes stand out from the background")
    ink /= ink.max()

    rows_with_ink = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols_with_ink = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    ink = ink[rows_with_ink[0] : rows_with_ink[-1] + 1, cols_with_ink[0] : cols_with_ink[-1] + 1]

    h, w = ink.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize((new_w, new_h), Image.BOX))
    scaled = np.clip(scaled, 0.0, None)
    if scaled.max() > 0:
        scaled = scaled / scaled.max()

    rows, cols = image_shape
    if center == "mass":
        ys, xs = np.indices(scaled.shape)
        total = scaled.sum()
        cy, cx = (ys * scaled).sum() / total, (xs * scaled).sum() / total
        top, left = round(rows / 2 - 0.5 - cy), round(cols / 2 - 0.5 - cx)
    else:
        top, left = (rows - new_h) // 2, (cols - new_w) // 2
    top = int(np.clip(top, 0, rows - new_h))
    left = int(np.clip(left, 0, cols - new_w))
    canvas = np.zeros(image_shape)
    canvas[top : top + new_h, left : left + new_w] = scaled
    return canvas


def load_digit_image(path: str | Path, image_shape: tuple[int, int], box: int, center: str) -> np.ndarray:
    """Read any image file PIL understands and normalise it: -> (rows·cols,) in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            img.load()
            grey = _to_grey(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not an image kqv can read (PNG, JPEG, …): {exc}") from None
    try:
        return normalise_digit(grey, image_shape, box, center).reshape(-1)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
