"""keras-hub DenseNet presets, read into our models (``keras_densenet.keras_hub_export``
writes ours as one).

A keras-hub preset is a directory: ``config.json`` (a ``DenseNetBackbone``),
``model.weights.h5`` (its weights, addressed by auto-generated layer paths),
``metadata.json``, and for a ``DenseNetImageClassifier`` also ``task.json``
and ``task.weights.h5`` (the classifier). keras-hub's layer names map to ours:

=================================  ==================================
keras-hub                          keras_densenet
=================================  ==================================
``conv1_conv``, ``conv1_bn``       ``stem_conv``, ``stem_bn``
``stack{s}_block{i}_1_bn/_conv``   ``block{s}_layer{i}_bn1/_conv1``
``stack{s}_block{i}_2_bn/_conv``   ``block{s}_layer{i}_bn2/_conv2``
``transition{t}_bn/_conv``         ``transition{t}_bn/_conv``
``bn``                             ``final_bn``
``predictions`` (the task's)       ``predictions``
=================================  ==================================

keras-hub's ``DenseNetBackbone`` fixes what ours leaves open: a 64-filter
7x7/2 stem with TensorFlow ``"same"`` padding (as the original Keras release;
torchvision and keras.applications pad symmetrically, which differs at even
input sizes only), BN epsilon 1.001e-5, bottleneck, 4 * growth_rate
bottleneck width. Reading goes through keras-hub's own classes (``from_preset``),
so it needs ``keras-hub`` installed.
"""

import json
import os
import re

from keras_densenet.weights.assignment import weighted_layers
from keras_densenet.weights.base import WeightFormat

BN_EPSILON = 1.001e-5
"""keras-hub's DenseNet BatchNormalization epsilon (``densenet_backbone.BN_EPSILON``)."""
CLASSES = ("DenseNetBackbone", "DenseNetImageClassifier")


class KerasHubPresetFormat(WeightFormat):
    def detect(self, path, head):
        return preset_class(path) is not None

    def requirements(self, path):
        return {**super().requirements(path), "preprocessing": _preprocessing(path)}

    def read(self, path, weighted_layer_names):
        task = _load(path)
        return {layer_name(name): layer.get_weights()
                for name, layer in weighted_layers(task).items()}


KERAS_HUB = KerasHubPresetFormat("keras_hub", "keras-hub DenseNet preset directory",
                                 bn_epsilon=BN_EPSILON, stem_padding="same")


def preset_class(path):
    """``"DenseNetBackbone"``/``"DenseNetImageClassifier"`` if ``path`` is a keras-hub DenseNet
    preset directory (the task's class when it has one), else ``None``."""
    if not os.path.isdir(path):
        return None
    found = None
    for name in ("config.json", "task.json"):
        try:
            with open(os.path.join(path, name)) as handle:
                class_name = json.load(handle).get("class_name")
        except (OSError, ValueError, AttributeError):
            continue
        if class_name in CLASSES:
            found = class_name
    return found


def layer_name(keras_hub_name):
    """keras-hub layer name -> ours (``stack2_block3_1_conv`` -> ``block2_layer3_conv1``)."""
    fixed = {"conv1_conv": "stem_conv", "conv1_bn": "stem_bn", "bn": "final_bn"}
    if keras_hub_name in fixed:
        return fixed[keras_hub_name]
    match = re.fullmatch(r"stack(\d+)_block(\d+)_([12])_(bn|conv)", keras_hub_name)
    if match:
        stack, block, index, kind = match.groups()
        return f"block{stack}_layer{block}_{kind}{index}"
    return keras_hub_name  # transition{t}_bn/_conv and predictions are spelled alike


def keras_hub_layer_name(ours):
    """Our layer name -> keras-hub's (the inverse of ``layer_name``)."""
    fixed = {"stem_conv": "conv1_conv", "stem_bn": "conv1_bn", "final_bn": "bn"}
    if ours in fixed:
        return fixed[ours]
    match = re.fullmatch(r"block(\d+)_layer(\d+)_(bn|conv)([12])", ours)
    if match:
        block, layer, kind, index = match.groups()
        return f"stack{block}_block{layer}_{index}_{kind}"
    return ours


def _load(path):
    """keras-hub's own model for the preset at ``path`` (the classifier when it has one)."""
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(f"Reading the keras-hub preset {path!r} needs keras-hub: "
                          "pip install keras-hub.") from error
    if preset_class(path) == "DenseNetImageClassifier":
        return keras_hub.models.DenseNetImageClassifier.from_preset(path)
    return keras_hub.models.DenseNetBackbone.from_preset(path)


def _preprocessing(path):
    """``"torch"`` when the preset's image converter normalises with ImageNet mean/std
    (as keras-hub's DenseNet presets do), else ``None`` (unknown)."""
    if path is None:
        return None
    try:
        with open(os.path.join(path, "preprocessor.json")) as handle:
            converter = json.load(handle)["config"]["image_converter"]["config"]
        scale, offset = converter["scale"], converter["offset"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    torch_scale = [1 / (255 * s) for s in std]
    torch_offset = [-m / s for m, s in zip(mean, std)]
    close = lambda a, b: all(abs(x - y) < 1e-4 * max(1, abs(y)) for x, y in zip(a, b))  # noqa: E731
    if isinstance(scale, list) and close(scale, torch_scale) and close(offset, torch_offset):
        return "torch"
    return None
