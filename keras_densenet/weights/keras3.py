"""Keras 3 ``.weights.h5`` files, as ``save_weights`` and ``keras-densenet port`` write them.

They address variables by layer path, so the model must have the very
layers of the file; ``load_into`` compares the variables before loading.
``save_weights`` adds what the weights need of the model (BN epsilon, stem
padding, preprocessing) as HDF5 attributes, which ``requirements`` reads back,
and a SHA-256 digest of the arrays (HDF5 keeps no checksums of its own), which
``load_into`` verifies: a file changed after writing is refused, not loaded.
Files without a digest (written by Keras itself) load unverified. A file with
the classifier (``predictions``) loads into a model without it.
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
TOP_PREFIX = "layers/dense/"
"""Where a Keras 3 weights file keeps the classifier's variables (Keras names them by
layer class; the ``predictions`` Dense is the only Dense of a DenseNet)."""


class Keras3Format(WeightFormat):
    def detect(self, path, head):
        return head.startswith(HDF5_SIGNATURE) and layer_names(path) is None

    def requirements(self, path):
        found = read_metadata(path) if path else {}
        return {**super().requirements(path), **found}

    def load_into(self, model, path):
        try:
            verify_digest(path)
            extra = _check_variables(model, path)
        except ValueError:
            raise
        except Exception as error:  # h5py raises OSError, RuntimeError, KeyError... for bad files
            raise ValueError(f"{path!r} could not be read as {self.description}: the file is "
                             f"truncated or corrupt ({error}).") from error
        if not extra:
            model.load_weights(path)
            return
        # the file's classifier, for a model without one: load a copy without it
        import h5py

        with tempfile.TemporaryDirectory() as folder:
            headless = os.path.join(folder, "headless.weights.h5")
            with h5py.File(path, "r") as source, h5py.File(headless, "w") as target:
                for key, value in source.attrs.items():
                    target.attrs[key] = value
                for name in source:
                    source.copy(source[name], target, name=name)
                del target[TOP_PREFIX.rstrip("/")]
            model.load_weights(headless)


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


def _check_variables(model, path):
    """Compare the file's variables with those this model would save, before loading.

    Returns the file's variables the model lacks: none, or the classifier's
    (``TOP_PREFIX``) for a model without top; any other difference raises.
    """
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
    extra = sorted(name for name in set(found) - set(expected) if name.startswith(TOP_PREFIX))
    found = {name: shape for name, shape in found.items() if name not in extra}
    if found != expected:
        differing = sorted(set(found) ^ set(expected)) or sorted(
            k for k in expected if expected[k] != found[k])
        raise ValueError(
            f"The Keras weights file {path!r} does not fit model {model.name!r}: the model has "
            f"{len(expected)} variables ({sum(int(np.prod(s)) for s in expected.values())} "
            f"values), the file {len(found)} ({sum(int(np.prod(s)) for s in found.values())}). "
            f"First differences: {', '.join(differing[:3])}. Build the architecture the file "
            "was saved from.")
    return extra
