"""Published DenseNet weights: the registry, the file formats, and loading them.

* ``registry``: the formats (``FORMATS``, ``detect``), the published files
  (``manifest.json``: ``SOURCES``, ``find_entry``), ``download`` and
  ``verify_published``;
* one module per file format: ``keras3`` (our own ``.weights.h5``, with
  ``save_weights``), ``legacy_h5`` (keras.applications and the original Keras
  release), ``pytorch`` (torchvision/timm ``.pth`` and ``.safetensors``),
  ``keras_hub`` (keras-hub preset directories; ``keras_densenet.keras_hub_export``
  writes them);
* ``loading``: ``resolve`` (before building) and ``load`` (after);
* ``assignment``: ``assign``, which every format goes through: input-channel
  adaptation, shape and finiteness checks, all or nothing.

Importing this package imports no framework (Keras, TensorFlow, torch): each
is imported where a file is read.
"""

from keras_densenet.weights.assignment import assign
from keras_densenet.weights.keras3 import read_metadata, save_weights
from keras_densenet.weights.loading import WeightsPlan, load, resolve
from keras_densenet.weights.registry import (FORMATS, SOURCES, detect, download, find_entry,
                                             manifest, sources)

__all__ = ["FORMATS", "SOURCES", "WeightsPlan", "assign", "detect", "download", "find_entry",
           "load", "manifest", "read_metadata", "resolve", "save_weights", "sources"]
