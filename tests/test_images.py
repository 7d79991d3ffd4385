"""keras_densenet.apps.images: reading image files for a model."""

import numpy as np
import pytest
from PIL import Image

from keras_densenet.apps.images import load_image


def test_a_16_bit_png_is_scaled_to_0_255_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).round().astype("uint16")
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # Pillow writes uint16 as mode "I;16"
    with Image.open(tmp_path / "deep.png") as written:
        assert written.mode == "I;16"
    pixels = load_image(str(tmp_path / "deep.png"), resize=64, crop=64, interpolation="nearest")
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, np.repeat(np.round(ramp / 257)[..., None], 3, -1))
    halved = load_image(str(tmp_path / "deep.png"), resize=32, crop=32)  # bicubic, in float
    block_means = ramp.reshape(32, 2, 32, 2).mean(axis=(1, 3)) / 257
    assert np.abs(halved[..., 0] - block_means).max() <= 1


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_pixels_are_refused(tmp_path, mode):
    Image.new(mode, (8, 8)).save(tmp_path / "wide.tiff")
    with pytest.raises(ValueError, match=r"wide\.tiff: 32-bit .* pixels are not read"):
        load_image(str(tmp_path / "wide.tiff"), resize=8, crop=8)


def test_gray_16_bit_and_multi_band_images_give_the_channels_asked(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3)).astype("uint8")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    gray = load_image(str(tmp_path / "rgb.png"), 16, 16, "nearest", channels=1)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
    assert gray.shape == (16, 16, 1)
    np.testing.assert_array_equal(gray, expected)
    deep = rng.integers(0, 65536, (16, 16)).astype("uint16")
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(load_image(str(tmp_path / "deep.png"), 16, 16, "nearest", 1),
                                  np.round(deep / 257)[..., None])
    pages = [rng.integers(0, 256, (16, 16)).astype("uint8") for _ in range(4)]
    Image.fromarray(pages[0]).save(tmp_path / "bands.tiff", save_all=True,
                                   append_images=[Image.fromarray(p) for p in pages[1:]])
    bands = load_image(str(tmp_path / "bands.tiff"), 16, 16, "nearest", channels=4)
    np.testing.assert_array_equal(bands, np.stack(pages, axis=-1))
    with pytest.raises(ValueError, match=r"bands\.tiff: 4 pages, but the model takes 5 channels"):
        load_image(str(tmp_path / "bands.tiff"), 16, 16, channels=5)
    rgba = rng.integers(0, 256, (16, 16, 4)).astype("uint8")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(str(tmp_path / "rgba.png"), 16, 16, "nearest", 4),
                                  rgba)
    with pytest.raises(ValueError, match=r"rgb\.png: 3 bands \(RGB\), but the model takes 2"):
        load_image(str(tmp_path / "rgb.png"), 16, 16, channels=2)


def test_classify_feeds_a_gray_model_gray_images(tmp_path, capsys):
    from keras_densenet import DenseNet
    from keras_densenet.apps import cli

    model = DenseNet(depth=10, growth_rate=4, input_shape=(32, 32, 1), classes=3)
    model.save(tmp_path / "gray.keras")
    Image.fromarray(np.full((40, 40), 128, "uint8")).save(tmp_path / "x.png")
    assert cli.main(["classify", str(tmp_path / "x.png"), "--model",
                     str(tmp_path / "gray.keras"), "--json"]) == 0
    assert '"path"' in capsys.readouterr().out
