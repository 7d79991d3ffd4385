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
