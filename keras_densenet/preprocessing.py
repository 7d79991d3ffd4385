"""Input preprocessing and ImageNet prediction decoding.

Two conventions exist among published DenseNet weights:

* ``"torch"``: RGB scaled to [0, 1], then normalized with the ImageNet mean
  (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Used by
  keras.applications and torchvision/timm weights.
* ``"caffe_bgr"``: RGB -> BGR, subtract (103.939, 116.779, 123.68), then
  multiply by 0.017. Used by the original Keras DenseNet release.

Images of another channel count (a model built with ``input_shape=(H, W, C)``,
whose first convolution the weights loader adapts as timm does) are
normalized to match that adaptation (``normalization``): one channel (gray)
with the mean of the three channels' statistics; C channels (multi-band) with
channel ``i`` taking the statistics of channel ``i % 3`` in the order the
weights saw them (RGB for ``"torch"``, BGR for ``"caffe_bgr"``), none reversed.
"""

import functools
import importlib.resources
import json
import numbers

import numpy as np

from keras_densenet.config import model_config

MODES = ("torch", "caffe_bgr")
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
CAFFE_SCALE = 0.017


def normalization(mode, channels):
    """What ``preprocess_input`` does to images of ``channels`` channels in ``mode``.

    Returns ``{"reverse_channels": bool, "scale": [...], "offset": [...]}``
    (``channels`` floats each, JSON-ready): the images' channels are reversed if
    ``reverse_channels``, then each becomes ``x * scale + offset``.

    * 3 channels: RGB as the module docstring says (``"caffe_bgr"`` reverses them).
    * 1 channel (gray): the mean of the three means and of the three stds
      (``"torch"``: 0.449 and 0.226; ``"caffe_bgr"``: 114.799, times 0.017).
    * Any other count: channel ``i`` takes channel ``i % 3``'s statistics in the
      weights' order (RGB for ``"torch"``, BGR for ``"caffe_bgr"``), as the
      adapted first convolution repeats the RGB kernel; nothing is reversed.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
        raise ValueError(f"Images need at least one channel; got {channels!r} channels.")
    if mode == "torch":
        mean, std = np.asarray(TORCH_MEAN) * 255.0, np.asarray(TORCH_STD) * 255.0
    else:
        mean, std = np.asarray(CAFFE_BGR_MEAN), np.full(3, 1.0 / CAFFE_SCALE)
    if channels == 1:
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    else:
        mean, std = mean[np.arange(channels) % 3], std[np.arange(channels) % 3]
    return {"reverse_channels": mode == "caffe_bgr" and channels == 3,
            "scale": (1.0 / std).tolist(), "offset": (-mean / std).tolist()}


def preprocess_input(x, mode=None, data_format=None, model=None):
    """Preprocess images with values in [0, 255] (RGB, gray or multi-band); the input
    is never modified.

    Args:
        x: images, ``(..., H, W, C)`` for channels_last or ``(..., C, H, W)``
            for channels_first (3 channels: RGB; other counts: see
            ``normalization``); a NumPy array (a float32 array is returned)
            or a backend tensor / KerasTensor (a tensor is returned).
        mode: ``"torch"`` or ``"caffe_bgr"`` (see the module docstring);
            default: what ``model`` records, else ``"torch"``.
        data_format: default: ``model``'s, else ``keras.config.image_data_format()``.
        model: a model of this package (e.g. ``DenseNetImageNet161(weights="imagenet")``,
            whose original-release weights need ``"caffe_bgr"``): ``mode`` and
            ``data_format`` are taken from ``keras_densenet.model_config(model)``,
            and the images must have its input channels. A ``mode`` that
            contradicts the model's recorded one is an error.

    Returns:
        The preprocessed images, same shape, float32.
    """
    expected_channels = None
    if model is not None:
        config = model_config(model)
        recorded = config["preprocessing"]
        if mode is not None and recorded is not None and mode != recorded:
            raise ValueError(f"mode={mode!r} contradicts the model, whose weights expect "
                             f"mode={recorded!r}; leave mode out.")
        mode = mode or recorded
        data_format = data_format or config["data_format"]
        shape = config["input_shape"]
        expected_channels = shape[-1] if config["data_format"] == "channels_last" else shape[0]
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
    if len(x.shape) < 3 or not x.shape[channel_axis]:
        raise ValueError(
            f"preprocess_input expects images with their channels on axis {channel_axis} "
            f"({data_format}); got shape {tuple(x.shape)}."
        )
    channels = int(x.shape[channel_axis])
    if expected_channels is not None and channels != expected_channels:
        raise ValueError(f"The images have {channels} channels on axis {channel_axis} "
                         f"({data_format}) but the model takes {expected_channels}.")
    steps = normalization(mode, channels)
    broadcast = (channels,) if data_format == "channels_last" else (channels, 1, 1)
    scale = np.reshape(steps["scale"], broadcast).astype("float32")
    offset = np.reshape(steps["offset"], broadcast).astype("float32")
    if is_array:
        if steps["reverse_channels"]:
            x = np.flip(x, axis=channel_axis)
        return x * scale + offset
    ops = keras.ops
    x = ops.cast(x, "float32")
    if steps["reverse_channels"]:
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
