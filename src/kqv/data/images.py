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

Even then a drawing can be unlike every training digit: a "1" drawn with a thin pen on a big canvas
has strokes one pixel wide after scaling, a long thin strip becomes a dash. `shape_measures` gives
two numbers per image — width ÷ height of the ink, and the mean stroke width — and `shape_warnings`
says when a picture's fall clearly outside the range of 98% of the training digits (more than
SHAPE_MARGIN beyond their 1st or 99th percentile, `typical_shapes`, recorded in the model file when it
is trained; the margin keeps a digit at the edge of the range, measured on a coarse grid, quiet).
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kqv.errors import UserError

INK_THRESHOLD = 0.2  # of the stretched range: what counts as ink when cropping
SHAPE_THRESHOLD = 0.5  # what counts as ink when measuring a normalised image's shape
SHAPE_MARGIN = 0.05  # how far beyond the training digits' 1–99% range a measure must be to be named


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


def shape_measures(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, rows, cols) in [0, 1] -> (aspect, stroke), each (N,); NaN for an image without ink.

    aspect: the ink's bounding box, width ÷ height. stroke: the mean stroke width in pixels,
    2·area ÷ perimeter of the pixels above SHAPE_THRESHOLD (a stroke of length L and width w
    has area L·w and a perimeter of about 2L)."""
    ink = images > SHAPE_THRESHOLD  # (N, rows, cols)
    rows, cols = ink.any(axis=2), ink.any(axis=1)  # (N, rows), (N, cols)

    def extent(lines: np.ndarray) -> np.ndarray:  # (N, n) -> (N,): last − first inked line + 1
        first = lines.argmax(axis=1)
        last = lines.shape[1] - 1 - lines[:, ::-1].argmax(axis=1)
        return (last - first + 1).astype(np.float64)

    area = ink.sum(axis=(1, 2)).astype(np.float64)  # (N,)
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    perimeter = (padded[:, 1:] != padded[:, :-1]).sum(axis=(1, 2)) + (padded[:, :, 1:] != padded[:, :, :-1]).sum(
        axis=(1, 2)
    )  # (N,): edges between ink and background
    with np.errstate(invalid="ignore", divide="ignore"):
        empty = area == 0
        aspect = np.where(empty, np.nan, extent(cols) / np.where(empty, 1, extent(rows)))
        stroke = np.where(empty, np.nan, 2 * area / np.maximum(perimeter, 1))
    return aspect, stroke


def typical_shapes(images: np.ndarray) -> dict[str, list[float]]:
    """The training digits' 1st, 50th and 99th percentiles of each shape measure (for the model file)."""
    aspect, stroke = shape_measures(images)
    return {
        name: [round(float(v), 3) for v in np.nanpercentile(values, [1, 50, 99])]
        for name, values in (("aspect", aspect), ("stroke", stroke))
    }


def shape_warnings(image: np.ndarray, typical: dict) -> list[str]:
    """(rows, cols) as the network sees it -> what is unlike the training digits, in words ([] if nothing)."""
    (aspect,), (stroke,) = shape_measures(image[None])
    (a_low, a_mid, a_high), (s_low, s_mid, s_high) = typical["aspect"], typical["stroke"]
    low, high = 1 - SHAPE_MARGIN, 1 / (1 - SHAPE_MARGIN)
    found = []
    if aspect > a_high * high:
        found.append(
            f"the ink is {aspect:.2f} times as wide as tall, wider than 99% of the training digits "
            f"(width ÷ height at most {a_high:.2f}, typically {a_mid:.2f}); crop the picture to one upright digit"
        )
    elif aspect < a_low * low:
        found.append(
            f"the ink is {1 / aspect:.1f} times as tall as wide, narrower than 99% of the training digits "
            f"(width ÷ height at least {a_low:.2f}, typically {a_mid:.2f})"
        )
    if stroke < s_low * low:
        found.append(
            f"its strokes are {stroke:.2f} px wide as the network sees them, thinner than 99% of the training "
            f"digits' (at least {s_low:.2f} px, typically {s_mid:.2f}); draw with a thicker pen"
        )
    elif stroke > s_high * high:
        found.append(
            f"its strokes are {stroke:.2f} px wide as the network sees them, thicker than 99% of the training "
            f"digits' (at most {s_high:.2f} px, typically {s_mid:.2f}); draw with a thinner pen"
        )
    return found
