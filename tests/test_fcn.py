"""DenseNetFCN and feature pyramids."""

import keras
import numpy as np
import pytest

from keras_densenet import DenseNet, DenseNetImageNet121
from keras_densenet.features import DenseNetBackbone, pyramid_outputs
from keras_densenet.fcn import DenseNetFCN, FCDenseNet56, FCDenseNet67, FCDenseNet103
from counting import trainable_parameters

TINY = dict(nb_dense_block=3, growth_rate=4, nb_layers_per_block=1, init_conv_filters=8,
            classes=3)


@pytest.mark.parametrize("constructor, millions", [(FCDenseNet56, 1.4), (FCDenseNet67, 3.5),
                                                   (FCDenseNet103, 9.3)])
def test_tiramisu_parameter_counts(constructor, millions):
    # the paper reports 1.5M / 3.5M / 9.4M (12 CamVid classes)
    model = constructor((64, 64, 3), classes=12)
    assert round(trainable_parameters(model) / 1e6, 1) == millions
    assert model.output.shape == (None, 64, 64, 12)


def test_up_path_concatenates_only_the_new_maps():
    model = DenseNetFCN((32, 32, 3), **TINY)
    # up1's transition sees only the bottleneck's new maps (1 layer x k=4 channels)
    assert model.get_layer("up1_transition_deconv").input.shape[-1] == 4
    skip = model.get_layer("up1_skip_concat").input
    assert skip[1].shape[-1] == model.get_layer("down3_layer1_concat").output.shape[-1]


@pytest.mark.parametrize("upsampling_type", ["deconv", "upsampling", "subpixel"])
def test_per_pixel_softmax_for_every_upsampling(images, upsampling_type):
    model = DenseNetFCN((32, 32, 3), upsampling_type=upsampling_type, **TINY)
    out = model.predict(images(2, 32) / 255.0, verbose=0)
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("upsampling_type", ["deconv", "subpixel"])
def test_channels_first_equals_channels_last(images, upsampling_type):
    last = DenseNetFCN((32, 32, 3), upsampling_type=upsampling_type, **TINY)
    first = DenseNetFCN((3, 32, 32), upsampling_type=upsampling_type, data_format="channels_first",
                        **TINY)
    first.set_weights(last.get_weights())
    x = images(2, 32) / 255.0
    np.testing.assert_allclose(
        first.predict(x.transpose(0, 3, 1, 2), verbose=0).transpose(0, 2, 3, 1),
        last.predict(x, verbose=0), atol=1e-5)


def test_variable_input_size_and_save_load(tmp_path, images):
    model = DenseNetFCN((None, None, 3), upsampling_type="subpixel", **TINY)
    assert model.predict(images(1, 48) / 255.0, verbose=0).shape == (1, 48, 48, 3)
    path = str(tmp_path / "fcn.keras")
    model.save(path)
    x = images(1, 40) / 255.0
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_shape=(30, 32, 3)), "divisible by 2\\*\\*nb_dense_block = 8.*got 30"),
    (dict(input_shape=(32, 32, 3), nb_layers_per_block=[1, 2]), "has 2 entries"),
    (dict(input_shape=(32, 32, 3), upsampling_type="bilinear"), "upsampling_type must be"),
    (dict(input_shape=(32, 32)), "input_shape must have 3 entries"),
])
def test_fcn_errors(kwargs, message):
    arguments = {**TINY, **kwargs}
    with pytest.raises(ValueError, match=message):
        DenseNetFCN(**arguments)


def test_imagenet_pyramid_has_strides_4_to_32():
    model = DenseNetImageNet121(include_top=False, input_shape=(64, 64, 3))
    backbone = DenseNetBackbone(model, levels=("P3", "P4", "P5"))
    shapes = {key: tuple(t.shape) for key, t in backbone.output.items()}
    assert shapes == {"P3": (None, 8, 8, 512), "P4": (None, 4, 4, 1024),
                      "P5": (None, 2, 2, 1024)}
    assert tuple(pyramid_outputs(model)["P2"].shape) == (None, 16, 16, 256)


def test_pyramid_of_loaded_and_memory_efficient_models(tmp_path):
    model = DenseNet(depth=16, growth_rate=4, bottleneck=True, reduction=0.5,
                     input_shape=(32, 32, 3), memory_efficient=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    levels = pyramid_outputs(keras.models.load_model(path))
    assert [tuple(t.shape) for t in levels.values()] == [
        (None, 32, 32, 16), (None, 16, 16, 16), (None, 8, 8, 16)]
    with pytest.raises(ValueError, match="levels \\['P5'\\] are not among"):
        DenseNetBackbone(model, levels=("P5",))
