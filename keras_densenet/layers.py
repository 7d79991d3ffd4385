"""Layers DenseNets need beyond Keras' own: blur pooling and pixel shuffle.

Both hold no weights and take ``data_format``. They are registered with Keras
under the package name ``keras_densenet`` (``keras_densenet>BlurPool2D``), so
``.keras`` files that use them load wherever ``keras_densenet`` is installed.
"""

import keras
from keras import layers

from keras_densenet.utils import channel_axis


@keras.saving.register_keras_serializable(package="keras_densenet")
class BlurPool2D(layers.Layer):
    """Anti-aliased downsampling (Zhang 2019): 3x3 binomial blur, stride 2, reflect padding.

    ``(batch, H, W, C)`` -> ``(batch, ceil(H/2), ceil(W/2), C)`` (channels first:
    ``(batch, C, H, W)`` -> ``(batch, C, ceil(H/2), ceil(W/2))``); no weights.
    """

    def __init__(self, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format

    def call(self, x):
        return blur_pool(x, self.data_format)

    def compute_output_shape(self, shape):
        half = lambda size: None if size is None else (size + 1) // 2  # noqa: E731
        if self.data_format == "channels_last":
            return (shape[0], half(shape[1]), half(shape[2]), shape[3])
        return (shape[0], shape[1], half(shape[2]), half(shape[3]))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


def blur_pool(x, data_format="channels_last"):
    """``BlurPool2D``'s computation: ``x`` blurred by the 3x3 binomial kernel (reflect
    padding), every second pixel: ``(batch, H, W, C)`` -> ``(batch, ceil(H/2), ceil(W/2), C)``."""
    ops = keras.ops
    axis = channel_axis(data_format)
    taps = ops.convert_to_tensor([1.0, 2.0, 1.0], dtype=x.dtype)
    kernel = ops.outer(taps, taps) / 16.0
    kernel = ops.tile(ops.reshape(kernel, (3, 3, 1, 1)), (1, 1, x.shape[axis], 1))
    spatial = [[1, 1], [1, 1]]
    pad = [[0, 0], *spatial, [0, 0]] if axis == -1 else [[0, 0], [0, 0], *spatial]
    x = ops.pad(x, pad, mode="reflect")
    return ops.depthwise_conv(x, kernel, strides=2, padding="valid", data_format=data_format)


@keras.saving.register_keras_serializable(package="keras_densenet")
class PixelShuffle(layers.Layer):
    """Sub-pixel upscaling (depth to space): ``(H, W, r*r*C)`` -> ``(r*H, r*W, C)``.

    ``scale`` is r (default 2); channels first: ``(r*r*C, H, W)`` -> ``(C, r*H, r*W)``.
    """

    def __init__(self, scale=2, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.scale, self.data_format = scale, data_format

    def call(self, x):
        ops, r = keras.ops, self.scale
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 2, 3, 1))
        _, height, width, channels = ops.shape(x)
        x = ops.reshape(x, (-1, height, width, r, r, channels // (r * r)))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, height * r, width * r, channels // (r * r)))
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 3, 1, 2))
        return x

    def compute_output_shape(self, shape):
        r = self.scale
        scaled = lambda size: None if size is None else size * r  # noqa: E731
        if self.data_format == "channels_first":
            return (shape[0], shape[1] // (r * r), scaled(shape[2]), scaled(shape[3]))
        return (shape[0], scaled(shape[1]), scaled(shape[2]), shape[3] // (r * r))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "data_format": self.data_format}
