"""Export DenseNets for serving: TensorFlow SavedModel, ONNX and TFLite (LiteRT).

All three go through Keras' own ``model.export``. Options shared by all:

* ``preprocessing``: bake ``preprocess_input(mode=...)`` into the exported
  graph, so that it takes raw ``uint8`` RGB images (``(batch, H, W, 3)``, or
  ``(batch, 3, H, W)`` for channels_first models) instead of normalized floats;
* ``fuse``: fold BatchNormalizations into convolutions first
  (``keras_densenet.fusion``), an inference-only speed-up with equal outputs.

The serving input is named ``images`` (``INPUT_NAME``).
"""

import importlib.util

import keras

from keras_densenet.fusion import fold_batch_norms
from keras_densenet.model import model_config
from keras_densenet.preprocessing import MODES, preprocess_input
from keras_densenet.utils import atomic_path

FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "tflite": "litert"}
TENSORFLOW_ONLY = ("saved_model", "tflite")
INPUT_NAME = "images"


def serving_model(model, preprocessing=None, fuse=False):
    """The model to export: optionally fused, optionally taking raw uint8 images.

    Args:
        model: a functional DenseNet with a fixed or variable input size.
        preprocessing: ``None`` (inputs already preprocessed, float32) or a
            ``preprocess_input`` mode, ``"torch"`` or ``"caffe_bgr"``.
        fuse: fold BN layers into convs (``fusion.fold_batch_norms``).
    """
    if preprocessing is not None and preprocessing not in MODES:
        raise ValueError(f"preprocessing must be None or one of {MODES}; got {preprocessing!r}.")
    if fuse:
        model = fold_batch_norms(model)
    if preprocessing is None:
        return model
    data_format = model_config(model)["data_format"]
    raw = keras.Input(model.input.shape[1:], dtype="uint8", name=INPUT_NAME)
    normalized = keras.layers.Lambda(
        lambda x: preprocess_input(x, mode=preprocessing, data_format=data_format),
        name=f"preprocess_{preprocessing}")(raw)
    return keras.Model(raw, model(normalized), name=model.name)


def export(model, path, format="saved_model", preprocessing=None, fuse=False, verbose=False,
           overwrite=False):
    """Export ``model`` to ``path`` in ``format`` (``"saved_model"``, ``"onnx"``, ``"tflite"``).

    Returns the path written. SavedModel and TFLite need the TensorFlow
    backend; ONNX works from TensorFlow, JAX (with ``jax2onnx``) and PyTorch.
    The export is written to a temporary sibling and renamed, so ``path`` is
    never half-written and a SavedModel never mixes with an older one; an
    existing ``path`` raises ``FileExistsError`` unless ``overwrite``.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {tuple(FORMATS)}; got {format!r}.")
    backend = keras.backend.backend()
    if format in TENSORFLOW_ONLY and backend != "tensorflow":
        raise ValueError(
            f"Exporting to {format} needs the TensorFlow backend (this is {backend!r}). "
            "Use format='onnx' here, or model.export(..., format='torch') on PyTorch; "
            "or re-load the .keras model with KERAS_BACKEND=tensorflow and export there.")
    if format == "onnx" and backend == "jax" and importlib.util.find_spec("jax2onnx") is None:
        raise ImportError("ONNX export from the JAX backend needs jax2onnx (pip install "
                          "jax2onnx), or re-load the .keras model with KERAS_BACKEND=tensorflow "
                          "and export there.")
    with atomic_path(path, overwrite=overwrite) as temporary:
        exported = serving_model(model, preprocessing, fuse)
        dtype = "uint8" if preprocessing else "float32"
        signature = [keras.InputSpec(shape=(None, *exported.input.shape[1:]), dtype=dtype,
                                     name=INPUT_NAME)]
        exported.export(temporary, format=FORMATS[format], verbose=verbose,
                        input_signature=signature)
    return path
