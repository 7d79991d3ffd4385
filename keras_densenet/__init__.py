"""keras-densenet: DenseNet and DenseNet-BC for Keras 3.

    from keras_densenet import DenseNet, DenseNetImageNet121
    model = DenseNetImageNet121(weights=None, input_shape=(224, 224, 3))

Layout: the model library is this package's top level (``architectures``,
``blocks``, ``layers``, ``memory_efficient``, ``model``, ``presets``,
``applications``, ``fcn``, ``features``, ``fusion``, ``preprocessing``,
``export``); ``keras_densenet.weights`` holds the published weights and their
file formats; ``keras_densenet.apps`` the command-line apps, which the library
never imports. Names are imported on first use, so ``import keras_densenet``
itself loads no framework (the command line starts fast).

Saved models load after ``import keras_densenet`` whatever the order of the
imports: the classes ``.keras`` files name are registered with Keras as soon as
Keras is imported (at once if it already is; otherwise when the import of
Keras, or of the TensorFlow that imports it, completes). Keras itself imports
no package but its own to find a class, so a process that never imports
``keras_densenet`` cannot load its models.
"""

import importlib
import importlib.abc
import sys

from keras_densenet.architectures import VARIANTS

__version__ = "0.3.0"

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
    "RDNet": "rdnet",
    "RDNetTiny": "rdnet",
    "RDNetSmall": "rdnet",
    "RDNetBase": "rdnet",
    "RDNetLarge": "rdnet",
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


SAVED_CLASSES = ("DenseNetModel", "RDNet")
"""The names whose modules (``_EXPORTS``) import every class a saved model names:
DenseNet's layers and model, and RDNet's layers and functions."""


def _register_saved_classes():
    for name in SAVED_CLASSES:
        importlib.import_module(f"keras_densenet.{_EXPORTS[name]}")


class _RegisterWhenKerasIsImported(importlib.abc.MetaPathFinder):
    """Registers this package's Keras classes once ``keras`` is imported.

    Wraps the loaders of ``keras`` and ``tensorflow`` (which imports Keras while
    it is itself half-initialized) and registers when the outermost of those
    imports completes with ``keras`` imported; then leaves ``sys.meta_path``.
    """

    WATCHED = ("keras", "tensorflow")

    def __init__(self):
        self.importing = 0  # watched imports in progress

    def find_spec(self, name, path=None, target=None):
        if name not in self.WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _WatchedLoader(spec.loader, self)
        return spec

    def executed(self):
        if self.importing == 0 and "keras" in sys.modules and self in sys.meta_path:
            sys.meta_path.remove(self)
            _register_saved_classes()


class _WatchedLoader(importlib.abc.Loader):
    """``loader``, reporting to ``watcher`` when its module has been executed."""

    def __init__(self, loader, watcher):
        self.loader, self.watcher = loader, watcher

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.watcher.importing += 1
        try:
            self.loader.exec_module(module)
        finally:
            self.watcher.importing -= 1
        self.watcher.executed()

    def __getattr__(self, name):  # get_resource_reader, is_package, get_filename, ...
        return getattr(self.loader, name)


if "keras" in sys.modules:
    _register_saved_classes()
elif not any(isinstance(finder, _RegisterWhenKerasIsImported) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenKerasIsImported())
