"""Keras 2 ``.h5`` files in their two published layouts.

Both keep ``layer_names`` and per-layer ``weight_names`` attributes (full-model
files nest them under ``model_weights``):

* ``KERAS_APPLICATIONS``: keras.applications' files, named layers
  (``conv2_block1_1_conv`` ...), matched to ours by name;
* ``ORIGINAL_KERAS``: the original Keras DenseNet release (v3.0), auto-named
  layers (``convolution2d_12``), matched to ours in topological order; BN
  epsilon 1.1e-5, TensorFlow ``"same"`` stem padding, Caffe BGR preprocessing.
"""

import re

import numpy as np

from keras_densenet.weights.base import HDF5_SIGNATURE, WeightFormat, text

KERAS_APPLICATIONS_LAYER = re.compile(
    r"^(conv1/(conv|bn)|conv\d+_block\d+_\d_(conv|bn)|pool\d+_(conv|bn)|bn)$")


class KerasApplicationsFormat(WeightFormat):
    def detect(self, path, head):
        names = layer_names(path) if head.startswith(HDF5_SIGNATURE) else None
        return names is not None and any(KERAS_APPLICATIONS_LAYER.match(n) for n in names)

    def read(self, path, weighted_layer_names):
        return {keras_applications_name(name): arrays
                for name, arrays in _layers(path).items() if arrays}


class OriginalKerasFormat(WeightFormat):
    def detect(self, path, head):
        names = layer_names(path) if head.startswith(HDF5_SIGNATURE) else None
        return names is not None and not any(KERAS_APPLICATIONS_LAYER.match(n) for n in names)

    def read(self, path, weighted_layer_names):
        """Auto-named layers, paired with ours in topological order.

        A file with one layer more than the model, a Dense last, is a file with
        the classifier for a model without; layers beyond ours keep a
        ``file layer N`` name so that the loader reports them.
        """
        layers = [arrays for arrays in _layers(path).values() if arrays]
        names = list(weighted_layer_names)
        if len(layers) == len(names) + 1 and len(layers[-1]) == 2 and layers[-1][0].ndim == 2:
            names.append("predictions")
        names += [f"file layer {index + 1}" for index in range(len(names), len(layers))]
        return dict(zip(names, layers))


KERAS_APPLICATIONS = KerasApplicationsFormat(
    "keras_applications", "Keras 2 h5 of keras.applications (named layers)",
    bn_epsilon=1.001e-5, stem_padding="symmetric", preprocessing="torch")
ORIGINAL_KERAS = OriginalKerasFormat(
    "original_keras", "Keras 2 h5 of the original Keras DenseNet release (auto-named layers)",
    bn_epsilon=1.1e-5, stem_padding="same", preprocessing="caffe_bgr")


def layer_names(path):
    """The ``layer_names`` of a Keras 2 h5 file, or ``None`` for a Keras 3 one."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            root = _root(h5)
            if "layer_names" not in root.attrs:
                return None
            return [text(name) for name in root.attrs["layer_names"]]
    except OSError as error:
        raise ValueError(f"{path!r} is an HDF5 file that cannot be opened: it is truncated "
                         f"or corrupt ({error}).") from error


def _layers(path):
    """Layer name -> weight arrays, in the file's (topological) layer order."""
    import h5py

    layers = {}
    with h5py.File(path, "r") as h5:
        root = _root(h5)
        for name in (text(n) for n in root.attrs["layer_names"]):
            group = root[name]
            layers[name] = [np.asarray(group[text(w)]) for w in group.attrs["weight_names"]]
    return layers


def _root(h5):
    """The group holding the layers: full-model files nest them under ``model_weights``."""
    return h5["model_weights"] if "model_weights" in h5 else h5


def keras_applications_name(name):
    """keras.applications layer name -> ours (``conv3_block2_1_conv`` -> ``block2_layer2_conv1``)."""
    fixed = {"conv1/conv": "stem_conv", "conv1/bn": "stem_bn",  # Keras 2 names
             "conv1_conv": "stem_conv", "conv1_bn": "stem_bn",  # Keras 3 names
             "bn": "final_bn", "predictions": "predictions"}
    if name in fixed:
        return fixed[name]
    match = re.fullmatch(r"conv(\d+)_block(\d+)_(\d)_(conv|bn)", name)
    if match:
        stage, layer, part, kind = match.groups()
        ours = {("0", "bn"): "bn1", ("1", "conv"): "conv1", ("1", "bn"): "bn2",
                ("2", "conv"): "conv2"}[(part, kind)]
        return f"block{int(stage) - 1}_layer{layer}_{ours}"
    match = re.fullmatch(r"pool(\d+)_(conv|bn)", name)
    if match:
        return f"transition{int(match.group(1)) - 1}_{match.group(2)}"
    return name  # weightless or unknown layers: reported by the loader if they hold weights
