import numpy as np
import pytest
from PIL import Image

from kqv.data.digits import load_embedded
from kqv.data.images import load_digit_image, normalise_digit
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
