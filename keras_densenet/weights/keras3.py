"""Keras 3 ``.weights.h5`` files, as ``save_weights`` and ``keras-densenet port`` write them.

They address variables by layer path, so the model must have the very
layers of the file; ``load_into`` compares the variables before loading.
``save_weights`` adds what the weights need of the model (BN epsilon, stem
padding, preprocessing) as HDF5 attributes, which ``requirements`` reads back.
"""

import os
import tempfile

import numpy as np

from keras_densenet.utils import atomic_path
from keras_densenet.weights.base import HDF5_SIGNATURE, WeightFormat
from keras_densenet.weights.legacy_h5 import layer_names

METADATA = ("bn_epsilon", "stem_padding", "preprocessing")
"""What a Keras 3 weights file written by ``save_weights`` records of its source."""


class Keras3Format(WeightFormat):
    def detect(self, path, head):
        return head.startswith(HDF5_SIGNATURE) and layer_names(path) is None

    def requirements(self, path):
        found = read_metadata(path) if path else {}
        return {**super().requirements(path), **found}

    def load_into(self, model, path):
        _check_variables(model, path)
        model.load_weights(path)


FORMAT = Keras3Format("keras3", "Keras 3 .weights.h5 (keras-densenet's own)", channels=None)


def save_weights(model, path, **metadata):
    """``model.save_weights(path)`` plus ``METADATA`` as HDF5 attributes, written atomically.

    ``DenseNet(weights=path)`` then builds the model with the recorded BN
    epsilon and stem padding.
    """
    import h5py

    unknown = set(metadata) - set(METADATA)
    if unknown:
        raise ValueError(f"Unknown metadata {sorted(unknown)}; known: {METADATA}.")
    with atomic_path(path) as temporary:
        model.save_weights(temporary)
        with h5py.File(temporary, "a") as h5:
            for key, value in metadata.items():
                if value is not None:
                    h5.attrs[f"keras_densenet.{key}"] = value


def read_metadata(path):
    """The ``METADATA`` recorded in a Keras 3 weights file (only the keys present)."""
    import h5py

    with h5py.File(path, "r") as h5:
        found = {key: h5.attrs.get(f"keras_densenet.{key}") for key in METADATA}
    return {key: value.item() if hasattr(value, "item") else value
            for key, value in found.items() if value is not None}


def _check_variables(model, path):
    """Compare the file's variables with those this model would save, before loading."""
    import h5py

    def variables(file):
        shapes = {}
        with h5py.File(file, "r") as h5:
            h5.visititems(lambda name, obj: shapes.__setitem__(name, obj.shape)
                          if isinstance(obj, h5py.Dataset) else None)
        return shapes

    with tempfile.TemporaryDirectory() as folder:
        reference = os.path.join(folder, "model.weights.h5")
        model.save_weights(reference)
        expected = variables(reference)
    found = variables(path)
    if found != expected:
        differing = sorted(set(found) ^ set(expected)) or sorted(
            k for k in expected if expected[k] != found[k])
        raise ValueError(
            f"The Keras weights file {path!r} does not fit model {model.name!r}: the model has "
            f"{len(expected)} variables ({sum(int(np.prod(s)) for s in expected.values())} "
            f"values), the file {len(found)} ({sum(int(np.prod(s)) for s in found.values())}). "
            f"First differences: {', '.join(differing[:3])}. Build the architecture the file "
            "was saved from.")
