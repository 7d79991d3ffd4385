"""Files saved by keras-densenet 0.1 (before the package layout changed) still load.

The fixtures in tests/data/legacy were written by tests/data/legacy/make_fixtures.py
at commit b1a78f1: a plain DenseNet-BC, the same in the memory-efficient layout,
one with the deep blur-pooled stem and an FC-DenseNet with pixel shuffle, each
as a ``.keras`` file, and the plain one's ``.weights.h5`` (with metadata).
"""

import os

import keras
import numpy as np
import pytest

from keras_densenet import DenseNet, model_config, pyramid_outputs

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy")
EXPECTED = np.load(os.path.join(LEGACY, "expected.npz"))


@pytest.mark.parametrize("name", ["plain", "memory_efficient", "blur", "fcn"])
def test_legacy_keras_file_loads_with_the_same_outputs(name):
    model = keras.models.load_model(os.path.join(LEGACY, f"{name}.keras"))
    output = keras.ops.convert_to_numpy(model(EXPECTED["input"], training=False))
    np.testing.assert_allclose(output, EXPECTED[name], atol=1e-5)


def test_legacy_model_gets_a_derived_config():
    model = keras.models.load_model(os.path.join(LEGACY, "plain.keras"))
    config = model_config(model)
    assert config["data_format"] == "channels_last"
    assert config["pyramid"] == {"P0": "block1_layer2_concat", "P1": "block2_layer2_concat"}
    assert {k: tuple(v.shape) for k, v in pyramid_outputs(model).items()} == {
        "P0": (None, 32, 32, 16), "P1": (None, 16, 16, 16)}


def test_legacy_weights_file_loads_with_its_metadata():
    model = DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5, nb_dense_block=2,
                     nb_layers_per_block=[2, 2], input_shape=(32, 32, 3), classes=3,
                     weights=os.path.join(LEGACY, "plain.weights.h5"))
    assert model.get_layer("stem_conv").output.shape[-1] == 8
    assert model.get_layer("block1_layer1_bn1").epsilon == pytest.approx(1e-5)
    assert model_config(model)["preprocessing"] == "torch"
    output = keras.ops.convert_to_numpy(model(EXPECTED["input"], training=False))
    np.testing.assert_allclose(output, EXPECTED["plain"], atol=1e-5)
