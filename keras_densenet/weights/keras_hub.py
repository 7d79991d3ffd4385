"""keras-hub DenseNet presets: read one into our models, and write ours as one.

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
bottleneck width. Reading and writing both go through keras-hub's own classes
(``from_preset`` / ``save_to_preset``), so both need ``keras-hub`` installed.
"""

import json
import os
import re
import shutil
import tempfile
import warnings

from keras_densenet.weights.base import WeightFormat

BN_EPSILON = 1.001e-5
"""keras-hub's DenseNet BatchNormalization epsilon (``densenet_backbone.BN_EPSILON``)."""
STEM_FILTERS = 64
"""keras-hub's DenseNet stem conv always has 64 filters."""
CLASSES = ("DenseNetBackbone", "DenseNetImageClassifier")


class KerasHubPresetFormat(WeightFormat):
    def detect(self, path, head):
        return preset_class(path) is not None

    def requirements(self, path):
        return {**super().requirements(path), "preprocessing": _preprocessing(path)}

    def read(self, path, weighted_layer_names):
        task = _load(path)
        table = {}
        for layer in _weighted(task):
            table[layer_name(layer.name)] = [w.numpy() if hasattr(w, "numpy") else w
                                             for w in layer.get_weights()]
        return table


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


def save_preset(model, preset_dir, overwrite=False):
    """Write a keras_densenet ImageNet-style model as a keras-hub preset directory.

    ``keras_hub.models.DenseNetBackbone.from_preset(preset_dir)`` then loads the
    backbone, and with the top ``DenseNetImageClassifier.from_preset`` the
    classifier. keras-hub's architecture is fixed where ours is not (see the
    module docstring), so:

    * the stem must have 64 filters (121/169/201/264; densenet161's 96 cannot
      be expressed) and be the standard 7x7 one, with bottleneck and
      reduction 0.5; anything else is a ``ValueError``;
    * BN epsilon: ours is folded into the moving variance
      (``var + eps_ours - 1.001e-5``), exact up to float rounding;
    * a symmetric stem (keras.applications, torchvision, timm weights)
      becomes keras-hub's ``"same"`` one: outputs agree at odd input sizes
      only, and a ``UserWarning`` says so.

    Args:
        model: a model built by ``keras_densenet`` (``model_config`` reads it).
        preset_dir: directory to create; written in a temporary sibling and
            renamed into place.
        overwrite: replace an existing ``preset_dir``.

    A model without the top (any ``pooling``) is written as the backbone alone.

    Returns:
        The keras-hub model that was saved (backbone or classifier).
    """
    from keras_densenet.weights.loading import weighted_layers
    from keras_densenet.config import model_config

    if os.path.exists(preset_dir) and not overwrite:
        raise ValueError(f"preset_dir {preset_dir!r} exists; pass overwrite=True to replace it.")
    config = model_config(model)
    architecture = config["architecture"] or {}
    _check_expressible(architecture, model.name)
    import keras_hub

    backbone = keras_hub.models.DenseNetBackbone(
        stackwise_num_repeats=list(architecture["nb_layers_per_block"]),
        growth_rate=architecture["growth_rate"], compression_ratio=0.5)
    task = backbone
    if architecture["include_top"]:
        activation = architecture["activation"]
        task = keras_hub.models.DenseNetImageClassifier(
            backbone=backbone, num_classes=architecture["classes"],
            activation=None if activation in (None, "linear") else activation)
    ours = weighted_layers(model)
    theirs = list(_weighted(task))
    if sorted(ours) != sorted(layer_name(layer.name) for layer in theirs):
        raise ValueError(f"Model {model.name!r} does not have keras-hub's DenseNet layers "
                         f"({len(ours)} weighted layers vs {len(theirs)}).")
    epsilon = architecture["bn_epsilon"]
    for layer in theirs:
        values = ours[layer_name(layer.name)].get_weights()
        if layer.name.endswith("bn") and epsilon != BN_EPSILON:
            gamma, beta, mean, variance = values
            values = [gamma, beta, mean, (variance + (epsilon - BN_EPSILON)).clip(min=0)]
        layer.set_weights(values)
    if architecture["stem_padding"] != "same":
        warnings.warn(f"{model.name}: keras-hub's DenseNet stem pads like TensorFlow's 'same' "
                      "while this model's pads symmetrically; the preset's outputs equal this "
                      "model's at odd input sizes only.", UserWarning, stacklevel=2)
    parent = os.path.dirname(os.path.abspath(preset_dir))
    temporary = tempfile.mkdtemp(prefix=".keras_hub_preset.", dir=parent)
    try:
        task.save_to_preset(temporary)
        if os.path.exists(preset_dir):
            shutil.rmtree(preset_dir)
        os.replace(temporary, preset_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return task


def _check_expressible(architecture, name):
    problems = []
    if not architecture:
        problems.append("it records no architecture")
    else:
        if not (architecture["subsample_initial_block"] and architecture["stem_type"] == "standard"
                and not architecture["anti_alias"]):
            problems.append("keras-hub has only the standard 7x7/2 ImageNet stem")
        if architecture["nb_filter"] != STEM_FILTERS:
            problems.append(f"keras-hub's stem has {STEM_FILTERS} filters, this model's "
                            f"{architecture['nb_filter']}")
        if not architecture["bottleneck"] or architecture["reduction"] != 0.5:
            problems.append("keras-hub's DenseNet is DenseNet-BC (bottleneck, reduction 0.5)")
    if problems:
        raise ValueError(f"Model {name!r} cannot be written as a keras-hub DenseNet preset: "
                         + "; ".join(problems) + ".")


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


def _weighted(model):
    """Layers of ``model`` (and of a task's backbone) that hold weights, flattened."""
    for layer in model.layers:
        if hasattr(layer, "layers") and getattr(layer, "weights", None):
            yield from _weighted(layer)
        elif layer.weights:
            yield layer


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
