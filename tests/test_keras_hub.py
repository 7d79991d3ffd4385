"""keras-hub DenseNet presets, both ways, checked against keras-hub's own models.

Small DenseNet-BC nets (keras-hub's fixed 64-filter stem, blocks 1-2-1-1,
growth rate 8) with random weights and BN statistics keep this fast; the
layer-name mapping is the same for every depth. keras-hub is in the ``test``
extra; without it these tests are skipped.
"""

import warnings

import keras
import numpy as np
import pytest

from keras_densenet import DenseNet, weights
from keras_densenet.keras_hub_export import save_preset
from keras_densenet.weights import keras_hub as hub_format

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed: "
                                "pip install keras-hub")

BLOCKS = [1, 2, 1, 1]
GROWTH = 8
TOLERANCE = 1e-4


def _randomize(layers):
    rng = np.random.default_rng(0)
    for layer in layers:
        values = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            values = [rng.uniform(0.5, 1.5, v.shape).astype("float32") if i in (0, 3) else
                      rng.uniform(-0.3, 0.3, v.shape).astype("float32")
                      for i, v in enumerate(values)]
        elif values:
            values = [rng.normal(0, 0.2, v.shape).astype("float32") for v in values]
        layer.set_weights(values)


def _ours(weights=None, **kwargs):
    arguments = dict(nb_dense_block=4, nb_layers_per_block=BLOCKS, growth_rate=GROWTH,
                     nb_filter=64, bottleneck=True, reduction=0.5, subsample_initial_block=True,
                     classes=5, activation=None, weight_decay=0.0, weights=weights)
    return DenseNet(**{**arguments, **kwargs})


def _images(size):
    return np.random.default_rng(size).normal(size=(2, size, size, 3)).astype("float32")


def _difference(a, b):
    return float(np.max(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b))))


@pytest.fixture(scope="module")
def hub_preset(tmp_path_factory):
    backbone = keras_hub.models.DenseNetBackbone(stackwise_num_repeats=BLOCKS,
                                                 growth_rate=GROWTH)
    classifier = keras_hub.models.DenseNetImageClassifier(backbone=backbone, num_classes=5)
    _randomize(classifier.layers + backbone.layers)
    folder = str(tmp_path_factory.mktemp("hub") / "preset")
    classifier.save_to_preset(folder)
    return folder, classifier


def test_a_keras_hub_preset_loads_through_weights_dir(hub_preset):
    folder, classifier = hub_preset
    fmt = weights.detect(folder)
    assert fmt.name == "keras_hub"
    assert (fmt.requirements(folder)["bn_epsilon"], fmt.requirements(folder)["stem_padding"]) \
        == (1.001e-5, "same")
    model = _ours(weights=folder)
    assert model.densenet_config["weights_source"] == "file"
    for size in (64, 65):
        images = _images(size)
        assert _difference(model(images, training=False), classifier(images)) < TOLERANCE


def test_port_checks_a_preset_against_keras_hub(hub_preset):
    from keras_densenet.apps.port import max_difference_from_source

    folder, _ = hub_preset
    model = _ours(weights=folder)
    difference = max_difference_from_source(model, folder, "keras_hub", None, True,
                                            "channels_last")
    assert difference < TOLERANCE


@pytest.mark.parametrize("stem_padding, size", [("symmetric", 65), ("same", 64)])
def test_our_model_saved_as_a_preset_loads_in_keras_hub(tmp_path, stem_padding, size):
    # epsilon 1e-5 (torchvision's) exercises the fold into keras-hub's 1.001e-5
    model = _ours(stem_padding=stem_padding, bn_epsilon=1e-5)
    _randomize(model.layers)
    folder = str(tmp_path / "preset")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_preset(model, folder)
    assert any("odd input sizes" in str(w.message) for w in caught) == (stem_padding != "same")
    images = _images(size)
    classifier = keras_hub.models.DenseNetImageClassifier.from_preset(folder)
    assert _difference(classifier(images), model(images, training=False)) < TOLERANCE
    backbone = keras_hub.models.DenseNetBackbone.from_preset(folder)
    features = keras.Model(model.input, model.get_layer("final_relu").output)
    assert _difference(backbone(images), features(images, training=False)) < TOLERANCE


def test_save_preset_refuses_what_keras_hub_cannot_express_or_an_existing_dir(tmp_path):
    folder = tmp_path / "preset"
    folder.mkdir()
    model = _ours()
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        save_preset(model, str(folder))
    wide_stem = _ours(nb_filter=96)  # densenet161's stem
    with pytest.raises(ValueError, match="stem has 64 filters, this model's 96"):
        save_preset(wide_stem, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


def test_layer_names_map_both_ways():
    for theirs, ours in [("conv1_conv", "stem_conv"), ("bn", "final_bn"),
                         ("stack3_block7_2_conv", "block3_layer7_conv2"),
                         ("transition2_bn", "transition2_bn"), ("predictions", "predictions")]:
        assert hub_format.layer_name(theirs) == ours
        assert hub_format.keras_hub_layer_name(ours) == theirs
