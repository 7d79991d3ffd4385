"""Keras 3 ``.weights.h5`` files, as ``save_weights`` and ``keras-densenet port`` write them.

Keras (3.6 and later) records each layer's name with its variables; ``table``
reads the file by those names (files of earlier Keras: by the layer paths of
the model's own ``save_weights``), so they load through ``assignment.assign`` as
every format does. ``save_weights`` adds what the weights need of the model
(BN epsilon, stem padding, preprocessing) as HDF5 attributes, which
``requirements`` reads back, and a SHA-256 digest of the arrays (HDF5 keeps no
checksums of its own), which ``table`` verifies: a file changed after writing
is refused, not loaded. Files without a digest (written by Keras itself) load
unverified. A file with the classifier (``predictions``) loads into a model
without it.
"""

import hashlib
import os
import tempfile

import numpy as np

from keras_densenet.utils import atomic_path
from keras_densenet.weights.base import HDF5_SIGNATURE, WeightFormat, text
from keras_densenet.weights.legacy_h5 import layer_names

METADATA = ("bn_epsilon", "stem_padding", "preprocessing")
"""What a Keras 3 weights file written by ``save_weights`` records of its source."""

DIGEST_ATTRIBUTE = "keras_densenet.sha256"
TOP_PATH = "layers/dense/vars"
"""Where a Keras 3 weights file keeps the classifier's variables (Keras names them by
layer class; the ``predictions`` Dense is the only Dense of a DenseNet)."""


class Keras3Format(WeightFormat):
    def detect(self, path, head):
        return head.startswith(HDF5_SIGNATURE) and layer_names(path) is None

    def requirements(self, path):
        found = read_metadata(path) if path else {}
        return {**super().requirements(path), **found}

    def table(self, model, path):
        """The file's arrays by layer name, after ``verify_digest``."""
        import h5py

        verify_digest(path)
        with h5py.File(path, "r") as h5:
            groups = _variable_groups(h5)
            names = {group_path: group.attrs.get("name") for group_path, group in groups.items()}
            if None in names.values():  # written before Keras recorded layer names
                names = _names_by_path(model, groups)
            return {text(names[group_path]): [np.asarray(group[key]) for key in
                                              sorted(group, key=int)]
                    for group_path, group in groups.items()}


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
            h5.attrs[DIGEST_ATTRIBUTE] = _digest(h5)


def verify_digest(path):
    """``ValueError`` if ``path`` records a digest (``save_weights`` does) that its arrays
    no longer match; files without one pass."""
    import h5py

    with h5py.File(path, "r") as h5:
        recorded = h5.attrs.get(DIGEST_ATTRIBUTE)
        if recorded is None:
            return
        try:
            actual = _digest(h5)
        except Exception as error:  # h5py's errors for damaged files vary
            actual = f"unreadable ({type(error).__name__}: {error})"
    if text(recorded) != actual:
        raise ValueError(
            f"{path!r} has been changed or damaged since keras-densenet wrote it: the SHA-256 of "
            "its arrays does not match the one it records. Write or download it again.")


def _digest(h5):
    """SHA-256 over every dataset of an open HDF5 file: path, dtype, shape and bytes."""
    import h5py

    digest = hashlib.sha256()

    def add(name, obj):
        if isinstance(obj, h5py.Dataset):
            array = np.ascontiguousarray(obj[()])
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(array.tobytes())

    h5.visititems(add)
    return digest.hexdigest()


def read_metadata(path):
    """The ``METADATA`` recorded in a Keras 3 weights file (only the keys present)."""
    import h5py

    with h5py.File(path, "r") as h5:
        found = {key: h5.attrs.get(f"keras_densenet.{key}") for key in METADATA}
    return {key: value.item() if hasattr(value, "item") else value
            for key, value in found.items() if value is not None}


def _variable_groups(h5):
    """``{path: group}`` of every layer's non-empty ``vars`` group in an open Keras 3
    weights file (the optimizer's, if saved, are not a layer's)."""
    import h5py

    groups = {}

    def add(name, obj):
        if (isinstance(obj, h5py.Group) and name.startswith("layers/")
                and name.endswith("/vars") and len(obj)):
            groups[name] = obj

    h5.visititems(add)
    return groups


def _names_by_path(model, groups):
    """Layer names for the ``groups`` of a file that records none: those of the same
    paths in ``model``'s own ``save_weights`` (how Keras' ``load_weights`` matches
    them); the classifier is ``predictions``, another path keeps its path."""
    import h5py

    with tempfile.TemporaryDirectory() as folder:
        reference = os.path.join(folder, "model.weights.h5")
        model.save_weights(reference)
        with h5py.File(reference, "r") as h5:
            known = {path: text(group.attrs["name"])
                     for path, group in _variable_groups(h5).items()}
    return {path: known.get(path, "predictions" if path == TOP_PATH else path)
            for path in groups}
