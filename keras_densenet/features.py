"""Multi-scale features of a DenseNet, for detection and segmentation heads.

The builder records the output of every dense block while it builds the
graph, keyed by its stride: ``"P2"`` for stride 4 (the first block of an
ImageNet DenseNet), ``"P3"``, ``"P4"``, ``"P5"`` (stride 32). CIFAR-style nets
(no subsampling stem) give ``"P0"``, ``"P1"``, .... The record is part of the
model's ``densenet_config`` (``keras_densenet.config.model_config``), so it
survives saving and loading.
"""

import keras

from keras_densenet.config import model_config


def pyramid_outputs(model):
    """``{"P{log2 stride}": tensor}`` of every dense block's output, shallowest first."""
    levels = model_config(model)["pyramid"]
    if not levels:
        raise ValueError(f"Model {model.name!r} has no dense block layers "
                         "(block{b}_layer{l}_concat): is it a keras_densenet DenseNet?")
    return {level: model.get_layer(name).output for level, name in levels.items()}


def DenseNetBackbone(model, levels=None):
    """A ``keras.Model`` from ``model``'s input to its pyramid features (a dict).

    Args:
        model: a DenseNet built by this package (``include_top`` does not matter).
        levels: keys to keep, e.g. ``("P3", "P4", "P5")``; default all.

    Returns:
        A functional ``keras.Model``: images -> ``{"P2": (batch, H/4, W/4, C2), ...}``.
    """
    outputs = pyramid_outputs(model)
    if levels is not None:
        missing = sorted(set(levels) - set(outputs))
        if missing:
            raise ValueError(f"levels {missing} are not among {sorted(outputs)}.")
        outputs = {key: outputs[key] for key in levels}
    return keras.Model(model.inputs, outputs, name=f"{model.name}_backbone")
