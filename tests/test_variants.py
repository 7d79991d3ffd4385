"""Variants: blur-pooled deep-stem DenseNet-121 and Wide-DenseNet-BC."""

import keras
import numpy as np
import pytest

from keras_densenet import DenseNet, DenseNetBlur121d, DenseNetCIFAR
from keras_densenet.layers import BlurPool2D
from counting import trainable_parameters

SMALL = dict(nb_dense_block=4, nb_layers_per_block=1, growth_rate=4, nb_filter=8,
             bottleneck=True, reduction=0.5, subsample_initial_block=True)


def test_blur121d_matches_timms_structure():
    model = DenseNetBlur121d(input_shape=(224, 224, 3))
    # DenseNet-121 plus timm's deep stem: 3x3 convs 3->32->32->64 with their BNs
    assert trainable_parameters(model) == 7_978_856 + 864 + 9216 + 18432 + 2 * (32 + 32 + 64) - 9408 - 128
    assert model.get_layer("stem_blur").output.shape == (None, 56, 56, 64)
    assert model.get_layer("stem_conv1").strides == (2, 2)


def test_blur_pool_averages_with_a_binomial_filter():
    x = np.zeros((1, 4, 4, 1), dtype="float32")
    x[0, 1, 1, 0] = 16.0
    out = keras.ops.convert_to_numpy(BlurPool2D()(x))
    assert out.shape == (1, 2, 2, 1)
    assert out[0, 0, 0, 0] == pytest.approx(4.0)  # the centre tap of [1,2,1]x[1,2,1]/16
    constant = keras.ops.convert_to_numpy(BlurPool2D()(np.ones((1, 5, 5, 2), "float32")))
    np.testing.assert_allclose(constant, 1.0, rtol=1e-6)  # reflect padding keeps constants


def test_deep_anti_aliased_stem_in_both_data_formats(images, tmp_path):
    last = DenseNet(**SMALL, stem_type="deep", anti_alias=True, input_shape=(64, 64, 3))
    first = DenseNet(**SMALL, stem_type="deep", anti_alias=True, input_shape=(3, 64, 64),
                     data_format="channels_first")
    first.set_weights(last.get_weights())
    x = images(2, 64) / 255.0
    expected = last.predict(x, verbose=0)
    np.testing.assert_allclose(first.predict(x.transpose(0, 3, 1, 2), verbose=0), expected,
                               atol=1e-5)
    path = str(tmp_path / "blur.keras")
    last.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), expected,
                               atol=1e-6)


def test_stem_type_is_validated():
    with pytest.raises(ValueError, match="stem_type must be one of"):
        DenseNet(**SMALL, stem_type="tiered")


@pytest.mark.parametrize("preset, millions", [("wide_densenet_bc40_k36", 1.5),
                                              ("wide_densenet_bc40_k48", 2.7),
                                              ("wide_densenet_bc40_k60", 4.3)])
def test_wide_densenet_presets(preset, millions):
    assert round(trainable_parameters(DenseNetCIFAR(preset)) / 1e6, 1) == millions
