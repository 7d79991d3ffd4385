"""Multi-scale features of a DenseNet, for detection and segmentation heads.

``pyramid_outputs(model)`` finds the output of every dense block by layer name
(so it works on loaded models too) and keys it by its stride: ``"P2"`` for
stride 4 (the first block of an ImageNet DenseNet), ``"P3"``, ``"P4"``, ``"P5"``
(stride 32). CIFAR-style nets (no subsampling stem) give ``"P0"``, ``"P1"``, ....
"""

import re

import keras


def pyramid_outputs(model):
    """``{"P{log2 stride}": tensor}`` of every dense block's output, shallowest first."""
    last_layer = {}
    for layer in model.layers:
        match = re.fullmatch(r"block(\d+)_(?:layer(\d+)_concat|concat)", layer.name)
        if match:
            block, index = int(match.group(1)), int(match.group(2) or 10**9)
            if index >= last_layer.get(block, (0, None))[0]:
                last_layer[block] = (index, layer)
    if not last_layer:
        raise ValueError(f"Model {model.name!r} has no dense block layers "
                         "(block{b}_layer{l}_concat): is it a keras_densenet DenseNet?")
    subsampled = any(layer.name == "stem_pool" for layer in model.layers)
    first_level = 2 if subsampled else 0
    return {f"P{first_level + block - 1}": layer.output
            for block, (_, layer) in sorted(last_layer.items())}


def DenseNetBackbone(model, levels=None):
    """A ``keras.Model`` from ``model``'s input to its pyramid features (a dict).

    Args:
        model: a DenseNet built by this package (``include_top`` does not matter).
        levels: keys to keep, e.g. ``("P3", "P4", "P5")``; default all.
    """
    outputs = pyramid_outputs(model)
    if levels is not None:
        missing = sorted(set(levels) - set(outputs))
        if missing:
            raise ValueError(f"levels {missing} are not among {sorted(outputs)}.")
        outputs = {key: outputs[key] for key in levels}
    return keras.Model(model.inputs, outputs, name=f"{model.name}_backbone")
