"""The config recorded on every model: built, saved, loaded, fused, wrapped."""

import json

import keras
import numpy as np
import pytest

from keras_densenet import (DenseNet, DenseNetCIFAR, DenseNetImageNet121, DenseNetModel,
                            model_config, pyramid_outputs)
from keras_densenet.fusion import fold_batch_norms
from keras_densenet.arguments import Architecture
from keras_densenet.model import build

SMALL = dict(depth=16, growth_rate=4, bottleneck=True, reduction=0.5, input_shape=(32, 32, 3),
             classes=3)


def test_config_records_architecture_and_serving_facts():
    model = DenseNet(**SMALL)
    config = model_config(model)
    assert isinstance(model, DenseNetModel)
    assert config["architecture"]["nb_layers_per_block"] == [2, 2, 2]
    assert config["data_format"] == "channels_last"
    assert config["input_shape"] == [32, 32, 3]
    assert config["preprocessing"] is None and config["weights_source"] is None
    assert config["pyramid"] == {"P0": "block1_layer2_concat", "P1": "block2_layer2_concat",
                                 "P2": "block3_layer2_concat"}
    json.dumps(config)  # JSON-serializable


def test_config_survives_save_and_load(tmp_path):
    model = DenseNet(**SMALL)
    model.update_config(class_names=["a", "b", "c"], preprocessing="torch")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, DenseNetModel)
    assert model_config(loaded) == model_config(model)
    assert model_config(loaded)["class_names"] == ["a", "b", "c"]


def test_rebuild_from_the_recorded_architecture():
    model = DenseNetCIFAR("densenet_bc100_k12")
    rebuilt = build(Architecture(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in model_config(model)["architecture"].items()}))
    assert rebuilt.count_params() == model.count_params()
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]


def test_imagenet_preset_records_its_published_name_and_pyramid():
    config = model_config(DenseNetImageNet121(include_top=False, input_shape=(64, 64, 3)))
    assert config["published_name"] == "densenet121"
    assert list(config["pyramid"]) == ["P2", "P3", "P4", "P5"]


def test_fused_and_wrapped_models_keep_the_config():
    model = DenseNet(**{**SMALL, "input_shape": (3, 32, 32)}, data_format="channels_first")
    assert model_config(fold_batch_norms(model))["data_format"] == "channels_first"
    inputs = keras.Input((3, 32, 32))
    wrapped = keras.Model(inputs, keras.layers.Dense(2)(model(inputs)))
    assert model_config(wrapped)["data_format"] == "channels_first"


def test_pyramid_recorded_while_building_matches_the_blocks():
    model = DenseNet(**SMALL)
    shapes = {k: tuple(v.shape) for k, v in pyramid_outputs(model).items()}
    assert shapes == {"P0": (None, 32, 32, 16), "P1": (None, 16, 16, 16),
                      "P2": (None, 8, 8, 16)}


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=10), "densenet121 fixes depth"),
    (dict(growth_rate=12, bottleneck=False), "fixes bottleneck, growth_rate"),
])
def test_presets_refuse_architecture_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenseNetImageNet121(**kwargs)


def test_cifar_preset_refuses_depth():
    with pytest.raises(ValueError, match="densenet40_k12 fixes depth"):
        DenseNetCIFAR("densenet40_k12", depth=10)


def test_model_outputs_unchanged_by_the_model_class():
    model = DenseNet(**SMALL)
    functional = keras.Model(model.inputs, model.outputs)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)),
                                  keras.ops.convert_to_numpy(functional(x)))


def test_update_config_refuses_unknown_keys():
    model = DenseNet(**SMALL)
    with pytest.raises(ValueError, match="Unknown config keys \\['labels'\\]"):
        model.update_config(labels=["a"])
