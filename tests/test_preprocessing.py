"""preprocess_input and decode_predictions."""

import keras
import numpy as np
import pytest

from keras_densenet import decode_predictions, preprocess_input
from keras_densenet.preprocessing import normalization


def test_torch_mode_normalizes_with_imagenet_mean_and_std():
    pixel = np.array([[[[255.0, 0.0, 127.5]]]])
    out = preprocess_input(pixel, mode="torch")
    expected = (np.array([1.0, 0.0, 0.5]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-5)
    assert out.dtype == np.float32


def test_caffe_bgr_mode_flips_subtracts_and_scales():
    pixel = np.array([[[[10.0, 20.0, 30.0]]]])  # R, G, B
    out = preprocess_input(pixel, mode="caffe_bgr")
    expected = (np.array([30.0, 20.0, 10.0]) - [103.939, 116.779, 123.68]) * 0.017
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-5)


@pytest.mark.parametrize("mode", ["torch", "caffe_bgr"])
def test_channels_first_equals_transposed_channels_last(images, mode):
    x = images(2, 8)
    last = preprocess_input(x, mode=mode, data_format="channels_last")
    first = preprocess_input(np.transpose(x, (0, 3, 1, 2)), mode=mode,
                             data_format="channels_first")
    np.testing.assert_allclose(np.transpose(first, (0, 2, 3, 1)), last, rtol=1e-6)


@pytest.mark.parametrize("mode", ["torch", "caffe_bgr"])
def test_input_is_never_modified(images, mode):
    x = images(1, 4)
    original = x.copy()
    preprocess_input(x, mode=mode)
    np.testing.assert_array_equal(x, original)
    uint8 = x.astype("uint8")
    assert preprocess_input(uint8, mode=mode).dtype == np.float32
    np.testing.assert_array_equal(uint8, original.astype("uint8"))


@pytest.mark.parametrize("mode", ["torch", "caffe_bgr"])
def test_tensors_and_numpy_agree(images, mode):
    x = images(2, 4)
    from_tensor = keras.ops.convert_to_numpy(
        preprocess_input(keras.ops.convert_to_tensor(x), mode=mode))
    np.testing.assert_allclose(from_tensor, preprocess_input(x, mode=mode), rtol=1e-6)


def test_works_inside_a_model(images):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Lambda(preprocess_input)(inputs))
    x = images(1, 4)
    np.testing.assert_allclose(model.predict(x, verbose=0), preprocess_input(x), rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        preprocess_input(np.zeros((1, 4, 4, 3)), mode="caffe")
    with pytest.raises(ValueError, match="channels on axis -1 .* got shape \\(1, 4, 4, 0\\)"):
        preprocess_input(np.zeros((1, 4, 4, 0)))
    with pytest.raises(ValueError, match="channels on axis -3 .* got shape \\(4, 4\\)"):
        preprocess_input(np.zeros((4, 4)), data_format="channels_first")
    with pytest.raises(ValueError, match="data_format must be"):
        preprocess_input(np.zeros((1, 4, 4, 3)), data_format="NHWC")
    with pytest.raises(ValueError, match="at least one channel; got 0"):
        normalization("torch", 0)


@pytest.mark.parametrize("mode", ["torch", "caffe_bgr"])
def test_a_gray_channel_takes_the_mean_of_the_rgb_statistics(mode):
    gray = np.array([[[[10.0], [200.0]]]])
    out = preprocess_input(gray, mode=mode)
    if mode == "torch":
        expected = (gray / 255.0 - np.mean([0.485, 0.456, 0.406])) / np.mean([0.229, 0.224, 0.225])
    else:
        expected = (gray - np.mean([103.939, 116.779, 123.68])) * 0.017
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out.shape == gray.shape and out.dtype == np.float32


def test_bands_repeat_the_statistics_as_the_adapted_kernel_repeats_rgb(images):
    bands = images(2, 4, channels=5)
    torch_out = preprocess_input(bands, mode="torch")
    mean, std = np.array([0.485, 0.456, 0.406, 0.485, 0.456]), np.array(
        [0.229, 0.224, 0.225, 0.229, 0.224])
    np.testing.assert_allclose(torch_out, (bands / 255.0 - mean) / std, atol=1e-5)
    caffe_out = preprocess_input(bands, mode="caffe_bgr")  # in the weights' BGR order, unflipped
    bgr_mean = np.array([103.939, 116.779, 123.68, 103.939, 116.779])
    np.testing.assert_allclose(caffe_out, (bands - bgr_mean) * 0.017, atol=1e-5)
    first = preprocess_input(bands.transpose(0, 3, 1, 2), mode="torch",
                             data_format="channels_first")
    np.testing.assert_allclose(first.transpose(0, 2, 3, 1), torch_out, rtol=1e-6)
    tensor = keras.ops.convert_to_numpy(preprocess_input(keras.ops.convert_to_tensor(bands)))
    np.testing.assert_allclose(tensor, torch_out, rtol=1e-6)


def test_normalization_is_json_ready_and_matches_three_channel_modes():
    import json

    torch_steps = normalization("torch", 3)
    assert torch_steps["reverse_channels"] is False
    np.testing.assert_allclose(torch_steps["scale"], 1 / (255 * np.array([0.229, 0.224, 0.225])))
    assert normalization("caffe_bgr", 3)["reverse_channels"] is True
    assert normalization("caffe_bgr", 4)["reverse_channels"] is False
    assert len(normalization("torch", 7)["offset"]) == 7
    assert json.loads(json.dumps(normalization("torch", 2))) == normalization("torch", 2)


def test_decode_predictions_uses_the_shipped_class_index():
    preds = np.zeros((2, 1000), dtype="float32")
    preds[0, [0, 2, 999]] = [0.2, 0.7, 0.1]
    preds[1, 1] = 1.0
    decoded = decode_predictions(preds, top=3)
    assert decoded[0][0] == ("n01484850", "great_white_shark", pytest.approx(0.7))
    assert [name for _, name, _ in decoded[0]] == ["great_white_shark", "tench", "toilet_tissue"]
    assert decoded[1][0][:2] == ("n01443537", "goldfish")
    assert len(decoded[1]) == 3


def test_decode_predictions_rejects_other_shapes():
    with pytest.raises(ValueError, match="shape \\(batch, 1000\\)"):
        decode_predictions(np.zeros((1, 10)))


def test_preprocess_input_takes_the_mode_and_format_from_a_model():
    from keras_densenet import DenseNet

    model = DenseNet(depth=7, growth_rate=4, input_shape=(3, 32, 32),
                     data_format="channels_first")
    images = np.random.default_rng(0).uniform(0, 255, (2, 3, 32, 32))
    # no recorded preprocessing (random weights): torch, in the model's data format
    np.testing.assert_allclose(preprocess_input(images, model=model),
                               preprocess_input(images, mode="torch",
                                                data_format="channels_first"))
    # what loading the original Keras release records (DenseNetImageNet161(weights="imagenet"))
    model.update_config(preprocessing="caffe_bgr")
    np.testing.assert_allclose(preprocess_input(images, model=model),
                               preprocess_input(images, mode="caffe_bgr",
                                                data_format="channels_first"))
    with pytest.raises(ValueError, match="mode='torch' contradicts the model, whose weights "
                                         "expect mode='caffe_bgr'"):
        preprocess_input(images, mode="torch", model=model)
    with pytest.raises(ValueError, match="The images have 1 channels on axis -3 "
                                         r"\(channels_first\) but the model takes 3"):
        preprocess_input(images[:, :1], model=model)
