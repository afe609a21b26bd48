import numpy as np
import pytest
from PIL import Image

from kqv.data.digits import load_embedded
from kqv.data.images import load_digit_image, normalise_digit, shape_measures, shape_warnings, typical_shapes
from kqv.errors import UserError
from kqv.scratch import Network
from kqv.scratch.train import sgd


def as_photo(digit8: np.ndarray, dark_on_light: bool, canvas=(100, 120), offset=(10, 30), scale=9) -> Image.Image:
    """An 8x8 digit (ink = 1) blown up, placed off-centre on a bigger page, either polarity."""
    big = np.asarray(Image.fromarray((digit8 * 255).astype(np.uint8)).resize((8 * scale, 8 * scale), Image.BILINEAR))
    page = np.zeros(canvas, dtype=np.uint8)
    page[offset[0] : offset[0] + big.shape[0], offset[1] : offset[1] + big.shape[1]] = big
    if dark_on_light:
        page = 255 - page
    return Image.fromarray(page)


@pytest.fixture(scope="module")
def trained():
    data = load_embedded()
    net = Network([64, 100, 10], seed=0)
    sgd(net, data.train, 30, 10, 2.0, 0.1, seed=0, schedule="cosine")
    return net, data


@pytest.mark.parametrize("dark_on_light", [True, False])
@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_photos_of_test_digits_are_normalised_back_and_classified(tmp_path, trained, dark_on_light, fmt):
    net, data = trained
    correct, agree = 0, 0
    picks = np.arange(0, len(data.test.labels), 6)  # 60 test images, every class
    for i in picks:
        path = tmp_path / f"{i}.{fmt}"
        as_photo(data.test.x[i].reshape(8, 8), dark_on_light).save(path)
        x = load_digit_image(path, (8, 8), box=8, center="box")
        assert x.shape == (64,) and 0.0 <= x.min() and x.max() == pytest.approx(1.0)
        pred = int(net.predict(x[None])[0])
        correct += pred == data.test.labels[i]
        agree += pred == int(net.predict(data.test.x[i][None])[0])
    assert correct / len(picks) >= 0.85
    assert agree / len(picks) >= 0.85


def test_transparent_png_with_dark_strokes(tmp_path, trained):
    net, data = trained
    i = int(np.flatnonzero(data.test.labels == 7)[0])
    grey = np.asarray(as_photo(data.test.x[i].reshape(8, 8), dark_on_light=False))
    rgba = np.zeros((*grey.shape, 4), dtype=np.uint8)  # black strokes, alpha = ink
    rgba[..., 3] = grey
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "seven.png")
    x = load_digit_image(tmp_path / "seven.png", (8, 8), box=8, center="box")
    assert int(net.predict(x[None])[0]) == 7


def test_mnist_style_centres_by_mass_in_a_20_box():
    grey = np.zeros((50, 50))
    grey[5:25, 30:34] = 1.0  # a bar in the top-right corner
    out = normalise_digit(grey, (28, 28), box=20, center="mass")
    rows, cols = np.nonzero(out > 0.2)
    assert rows.max() - rows.min() + 1 == 20  # scaled so the long side is 20
    ys, xs = np.indices(out.shape)
    assert (ys * out).sum() / out.sum() == pytest.approx(13.5, abs=0.6)
    assert (xs * out).sum() / out.sum() == pytest.approx(13.5, abs=0.6)


def test_blank_and_non_images_are_clear_errors(tmp_path):
    Image.new("L", (30, 30), 255).save(tmp_path / "white.png")
    with pytest.raises(UserError, match="white.png: the image is blank"):
        load_digit_image(tmp_path / "white.png", (8, 8), 8, "box")
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(UserError, match="notes.txt: not an image"):
        load_digit_image(tmp_path / "notes.txt", (8, 8), 8, "box")
    with pytest.raises(UserError, match="no such image file"):
        load_digit_image(tmp_path / "absent.png", (8, 8), 8, "box")


# --- pictures unlike the training digits


def rectangle(rows: int, cols: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    image = np.zeros((rows, cols))
    image[top : top + height, left : left + width] = 1.0
    return image


@pytest.mark.parametrize(("height", "width"), [(20, 1), (1, 20), (20, 3), (6, 6), (12, 4)])
def test_shape_measures_of_a_rectangle_are_its_formulas(height, width):
    image = rectangle(28, 28, 3, 2, height, width)
    (aspect,), (stroke,) = shape_measures(image[None])
    assert aspect == pytest.approx(width / height)
    # area h·w, perimeter 2(h + w): a stroke's width is 2·area ÷ perimeter
    assert stroke == pytest.approx(2 * height * width / (2 * (height + width)))


def test_shape_measures_of_a_ring_and_an_empty_image():
    ring = rectangle(28, 28, 4, 4, 20, 12) - rectangle(28, 28, 6, 6, 16, 8)  # strokes 2 px wide
    (aspect, empty_aspect), (stroke, empty_stroke) = shape_measures(np.stack([ring, np.zeros((28, 28))]))
    assert aspect == pytest.approx(12 / 20)
    area, perimeter = 20 * 12 - 16 * 8, 2 * (20 + 12) + 2 * (16 + 8)  # outer and inner edges
    assert stroke == pytest.approx(2 * area / perimeter)
    assert np.isnan(empty_aspect) and np.isnan(empty_stroke)


def test_typical_shapes_are_the_percentiles_of_a_per_image_loop():
    images = load_embedded().train.x.reshape(-1, 8, 8)
    aspects, strokes = [], []
    for image in images:  # the same measures, one image at a time, by counting pixels and edges
        ink = image > 0.5
        ys, xs = np.nonzero(ink)
        aspects.append((xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1))
        edges = sum(
            ink[y, x] != (ink[y + dy, x + dx] if 0 <= y + dy < 8 and 0 <= x + dx < 8 else False)
            for y in range(8)
            for x in range(8)
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0))
            if ink[y, x]
        )
        strokes.append(2 * ink.sum() / edges)
    typical = typical_shapes(images)
    assert typical["aspect"] == pytest.approx(np.percentile(aspects, [1, 50, 99]), abs=1e-3)
    assert typical["stroke"] == pytest.approx(np.percentile(strokes, [1, 50, 99]), abs=1e-3)


def test_shape_warnings_name_what_is_unlike_the_training_digits():
    typical = {"aspect": [0.2, 0.75, 1.43], "stroke": [1.06, 1.97, 3.63]}  # MNIST's training digits
    assert shape_warnings(rectangle(28, 28, 4, 10, 20, 12) - rectangle(28, 28, 6, 12, 16, 8), typical) == []
    thin_one = shape_warnings(rectangle(28, 28, 4, 14, 20, 1), typical)
    assert [w.split(",")[0] for w in thin_one] == [
        "the ink is 20.0 times as tall as wide",
        "its strokes are 0.95 px wide as the network sees them",
    ]
    assert "draw with a thicker pen" in thin_one[1]
    edge = {"aspect": [0.2, 0.75, 1.43], "stroke": [0.97, 1.97, 3.63]}  # 0.95 px: within 5% of the range
    assert [w.split(",")[0] for w in shape_warnings(rectangle(28, 28, 4, 14, 20, 1), edge)] == [
        "the ink is 20.0 times as tall as wide"
    ]
    strip = shape_warnings(rectangle(28, 28, 13, 4, 2, 20), typical)
    assert strip[0].startswith("the ink is 10.00 times as wide as tall, wider than 99% of the training digits")
    blob = shape_warnings(rectangle(28, 28, 4, 4, 20, 18), typical)
    assert blob[0].startswith("its strokes are 9.47 px wide") and "thinner pen" in blob[0]
