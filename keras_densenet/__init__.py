"""keras-densenet: DenseNet and DenseNet-BC for Keras 3.

    from keras_densenet import DenseNet, DenseNetImageNet121
    model = DenseNetImageNet121(weights=None, input_shape=(224, 224, 3))

Layout: the model library is this package's top level (``architectures``,
``blocks``, ``layers``, ``memory_efficient``, ``model``, ``presets``,
``applications``, ``fcn``, ``features``, ``fusion``, ``preprocessing``,
``export``); ``keras_densenet.weights`` holds the published weights and their
file formats; ``keras_densenet.apps`` the command-line apps, which the library
never imports. Names are imported on first use, so ``import keras_densenet``
itself loads no framework (the command line starts fast); if Keras is already
imported, the model classes are registered at once, so that
``keras.models.load_model`` finds them in ``.keras`` files.
"""

import importlib
import sys

from keras_densenet.architectures import VARIANTS

__version__ = "0.2.0"

_EXPORTS = {
    "DenseNet": "builder",
    "DenseNetModel": "model",
    "model_config": "config",
    "DenseNetImageNet": "presets",
    **{variant.constructor: "presets" for variant in VARIANTS.values() if variant.constructor},
    "DenseNetCIFAR": "presets",
    "DenseNet121": "applications",
    "DenseNet161": "applications",
    "DenseNet169": "applications",
    "DenseNet201": "applications",
    "DenseNet264": "applications",
    "DenseNetFCN": "fcn",
    "FCDenseNet56": "fcn",
    "FCDenseNet67": "fcn",
    "FCDenseNet103": "fcn",
    "DenseNetBackbone": "features",
    "pyramid_outputs": "features",
    "decode_predictions": "preprocessing",
    "preprocess_input": "preprocessing",
}
"""Public name -> the module of ``keras_densenet`` that defines it."""

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"keras_densenet.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_densenet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if "keras" in sys.modules:
    importlib.import_module("keras_densenet.builder")
