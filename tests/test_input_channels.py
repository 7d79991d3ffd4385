"""Pretrained weights on images of any channel count: the input convolution adapted as
timm's ``adapt_input_conv`` adapts it, for every weight format.

A gray image must give exactly what its RGB copy gives (the kernel summed over
RGB), and an image of the RGB channels repeated k times what the RGB image
gives (the kernel repeated and scaled by 3 / 3k).
"""

import numpy as np
import pytest

from keras_densenet import DenseNet, weights
from keras_densenet.weights.assignment import adapt_input_kernel, input_convolution

torch = pytest.importorskip("torch")
pytest.importorskip("tf_keras")
pytest.importorskip("keras_hub")
pytest.importorskip("safetensors")

import small_weight_files as files  # noqa: E402  (needs the packages above)

TOLERANCE = 1e-4


def _outputs(model, x):
    return np.asarray(model(x, training=False))


def _largest_difference(a, b):
    return float(np.max(np.abs(a - b)))


@pytest.mark.parametrize("channels", [1, 2, 4, 5, 7])
def test_the_kernel_is_adapted_as_timm_adapts_it(channels):
    from timm_import import import_timm

    import_timm()
    from timm.models._manipulate import adapt_input_conv

    kernel = np.random.default_rng(0).normal(size=(7, 7, 3, 16)).astype("float32")
    theirs = adapt_input_conv(channels, torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
    ours = adapt_input_kernel(kernel, channels)
    assert ours.shape == (7, 7, channels, 16) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs.numpy().transpose(2, 3, 1, 0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt", files.FORMATS)
def test_a_gray_image_gives_what_its_rgb_copy_gives(tmp_path, fmt):
    path, arguments = files.write(fmt, tmp_path)
    gray = DenseNet(**arguments, input_shape=(32, 32, 1), weights=path)
    rgb = DenseNet(**arguments, input_shape=(32, 32, 3), weights=path)
    assert input_convolution(gray).name == "stem_conv"
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 1)).astype("float32")
    expected = _outputs(rgb, np.repeat(x, 3, axis=-1))
    assert _largest_difference(_outputs(gray, x), expected) <= TOLERANCE


def test_channels_first_and_repeated_rgb_bands(tmp_path):
    path, arguments = files.write("torch", tmp_path)
    rgb = DenseNet(**arguments, input_shape=(32, 32, 3), weights=path)
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    expected = _outputs(rgb, x)
    gray_first = DenseNet(**arguments, input_shape=(1, 32, 32), data_format="channels_first",
                          weights=path)
    gray = x[..., :1]
    assert _largest_difference(_outputs(gray_first, gray.transpose(0, 3, 1, 2)),
                               _outputs(rgb, np.repeat(gray, 3, axis=-1))) <= TOLERANCE
    six = DenseNet(**arguments, input_shape=(32, 32, 6), weights=path)  # RGB twice, halved
    assert _largest_difference(_outputs(six, np.concatenate([x, x], axis=-1)),
                               expected) <= TOLERANCE


def test_a_five_band_model_loads_and_runs(tmp_path):
    path, arguments = files.write("safetensors", tmp_path)
    model = DenseNet(**arguments, input_shape=(32, 32, 5), weights=path)
    rgb_kernel = DenseNet(**arguments, input_shape=(32, 32, 3),
                          weights=path).get_layer("stem_conv").get_weights()[0]
    np.testing.assert_allclose(model.get_layer("stem_conv").get_weights()[0],
                               adapt_input_kernel(rgb_kernel, 5), rtol=1e-6)
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 5)).astype("float32")
    from keras_densenet import preprocess_input

    logits = model.predict(preprocess_input(x, model=model), verbose=0)
    assert logits.shape == (2, files.CLASSES) and np.isfinite(logits).all()


def test_weights_of_a_gray_model_do_not_fit_an_rgb_one(tmp_path):
    arguments = files.arguments(16, 8)
    path = str(tmp_path / "gray.weights.h5")
    weights.save_weights(DenseNet(**arguments, input_shape=(32, 32, 1)), path)
    with pytest.raises(ValueError, match=r"stem_conv: model has \[\(7, 7, 3, 16\)\], file has "
                                         r"\[\(7, 7, 1, 16\)\]"):
        DenseNet(**arguments, input_shape=(32, 32, 3), weights=path)
