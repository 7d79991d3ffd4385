"""Input preprocessing and ImageNet prediction decoding.

Two conventions exist among published DenseNet weights:

* ``"torch"``: RGB scaled to [0, 1], then normalized with the ImageNet mean
  (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Used by
  keras.applications and torchvision/timm weights.
* ``"caffe_bgr"``: RGB -> BGR, subtract (103.939, 116.779, 123.68), then
  multiply by 0.017. Used by the original Keras DenseNet release.
"""

import functools
import importlib.resources
import json
import numbers

import numpy as np

MODES = ("torch", "caffe_bgr")
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
CAFFE_SCALE = 0.017


def preprocess_input(x, mode=None, data_format=None, model=None):
    """Preprocess RGB images with values in [0, 255]; the input is never modified.

    Args:
        x: images, ``(..., H, W, 3)`` for channels_last or ``(..., 3, H, W)``
            for channels_first; a NumPy array (a float32 array is returned)
            or a backend tensor / KerasTensor (a tensor is returned).
        mode: ``"torch"`` or ``"caffe_bgr"`` (see the module docstring);
            default: what ``model`` records, else ``"torch"``.
        data_format: default: ``model``'s, else ``keras.config.image_data_format()``.
        model: a model of this package (e.g. ``DenseNetImageNet161(weights="imagenet")``,
            whose original-release weights need ``"caffe_bgr"``): ``mode`` and
            ``data_format`` are taken from ``keras_densenet.model_config(model)``.
            A ``mode`` that contradicts the model's recorded one is an error.

    Returns:
        The preprocessed images, same shape, float32.
    """
    if model is not None:
        from keras_densenet.config import model_config

        config = model_config(model)
        recorded = config["preprocessing"]
        if mode is not None and recorded is not None and mode != recorded:
            raise ValueError(f"mode={mode!r} contradicts the model, whose weights expect "
                             f"mode={recorded!r}; leave mode out.")
        mode = mode or recorded
        data_format = data_format or config["data_format"]
    import keras

    mode = mode or "torch"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"data_format must be 'channels_last' or 'channels_first'; got {data_format!r}."
        )
    is_array = isinstance(x, (np.ndarray, list, tuple))
    if is_array:
        x = np.array(x, dtype="float32")  # a copy: the caller's array is never touched
    channel_axis = -1 if data_format == "channels_last" else -3
    if len(x.shape) < 3 or x.shape[channel_axis] != 3:
        raise ValueError(
            f"preprocess_input expects RGB images with 3 channels on axis {channel_axis} "
            f"({data_format}); got shape {tuple(x.shape)}."
        )
    if mode == "torch":
        scale = 1.0 / (255.0 * np.asarray(TORCH_STD))
        offset = -np.asarray(TORCH_MEAN) / np.asarray(TORCH_STD)
    else:
        scale = np.full(3, CAFFE_SCALE)
        offset = -CAFFE_SCALE * np.asarray(CAFFE_BGR_MEAN)
    broadcast = (3,) if data_format == "channels_last" else (3, 1, 1)
    scale = scale.reshape(broadcast).astype("float32")
    offset = offset.reshape(broadcast).astype("float32")
    if is_array:
        if mode == "caffe_bgr":
            x = np.flip(x, axis=channel_axis)
        return x * scale + offset
    ops = keras.ops
    x = ops.cast(x, "float32")
    if mode == "caffe_bgr":
        x = ops.flip(x, axis=channel_axis)
    return ops.add(ops.multiply(x, scale), offset)


@functools.lru_cache(maxsize=1)
def imagenet_class_index():
    """``{index: (wordnet_id, name)}`` for the 1000 ImageNet classes (shipped, offline)."""
    text = importlib.resources.files("keras_densenet").joinpath(
        "imagenet_class_index.json").read_text()
    return {int(k): tuple(v) for k, v in json.loads(text).items()}


def decode_predictions(preds, top=5):
    """Top-``top`` ImageNet classes of each prediction.

    Args:
        preds: ``(batch, 1000)`` scores (probabilities or logits).
        top: how many classes to return per image, 1 to 1000.

    Returns:
        One list per image of ``(wordnet_id, class_name, score)`` tuples, best first.
    """
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or not 1 <= top <= 1000:
        raise ValueError(f"top must be an integer from 1 to 1000; got {top!r}.")
    import keras

    preds = np.asarray(keras.ops.convert_to_numpy(preds))
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            f"decode_predictions expects a batch of ImageNet predictions of shape "
            f"(batch, 1000); got shape {preds.shape}."
        )
    index = imagenet_class_index()
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        results.append([(*index[int(i)], float(row[i])) for i in best])
    return results
