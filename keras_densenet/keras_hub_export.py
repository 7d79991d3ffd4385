"""Write a keras_densenet model as a keras-hub DenseNet preset directory: ``save_preset``.

The reverse of the ``keras_hub`` weight format (``keras_densenet.weights.keras_hub``,
whose layer-name mapping and BN epsilon it uses); it needs ``keras-hub``.
"""

import os
import shutil
import tempfile
import warnings

from keras_densenet.config import model_config
from keras_densenet.weights.keras_hub import BN_EPSILON, layer_name
from keras_densenet.weights.assignment import weighted_layers

STEM_FILTERS = 64
"""keras-hub's DenseNet stem conv always has 64 filters."""


def save_preset(model, preset_dir, overwrite=False):
    """Write a keras_densenet ImageNet-style model as a keras-hub preset directory.

    ``keras_hub.models.DenseNetBackbone.from_preset(preset_dir)`` then loads the
    backbone, and with the top ``DenseNetImageClassifier.from_preset`` the
    classifier. keras-hub's architecture is fixed where ours is not (see
    ``keras_densenet.weights.keras_hub``), so:

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
    theirs = list(weighted_layers(task).values())
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
