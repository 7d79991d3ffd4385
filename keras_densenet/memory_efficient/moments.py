"""Batch moments for the recomputed layers: computed once per feature map, with their gradient.

``channel_moments`` is the per-channel ``[mean, variance]`` BatchNormalization
normalizes with in training; ``FeatureMoments`` (a layer, ``block{b}_moments{i}``)
appends one map's moments to those of the maps before it, so the moments of a
block's growing concatenation cost O(depth), not O(depth^2).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_densenet")
class FeatureMoments(keras.layers.Layer):
    """Per-channel batch mean and variance of one feature map, computed once per map.

    The moments of a concatenation are the concatenated moments of its parts,
    so every later ``BatchNormalization`` reuses them instead of reducing (and
    differentiating) the concatenation again (``channel_moments``).

    Args:
        axis: the channel axis, -1 (channels last) or 1 (channels first).

    Call: ``x``, ``(batch, H, W, C)`` (or channels first), and optionally
    ``previous``, the ``(2, P)`` moments of the maps concatenated before it ->
    ``(2, P + C)``: ``[mean, variance]`` of ``concat(earlier maps, x)``, in
    ``statistics_dtype(self)``.
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, x, previous=None):
        moments = channel_moments(x, self.axis, statistics_dtype(self))
        return moments if previous is None else ops.concatenate([previous, moments], axis=-1)

    def compute_output_spec(self, x, previous=None):
        channels = x.shape[self.axis] + (0 if previous is None else previous.shape[-1])
        return keras.KerasTensor((2, channels), statistics_dtype(self))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def batch_norm_relu(batch_norm, x, batch_moments, axis):
    """``(relu(BN(x)), mean, variance)`` in ``statistics_dtype(batch_norm)``, with its variables.

    ``batch_moments``: normalize with (and return) the batch's per-channel
    moments along ``axis`` (training), else the moving ones. Called inside the
    recomputed functions: gamma and beta are read here, not passed in, because
    ``tf.recompute_grad`` differentiates the variables its function reads (a
    variable argument would count twice).
    """
    dtype = statistics_dtype(batch_norm)
    if batch_moments:
        mean, variance = ops.unstack(channel_moments(x, axis, dtype))
    else:
        mean = ops.cast(batch_norm.moving_mean, dtype)
        variance = ops.cast(batch_norm.moving_variance, dtype)
    scale = ops.cast(batch_norm.gamma, dtype) * ops.rsqrt(variance + batch_norm.epsilon)
    offset = ops.cast(batch_norm.beta, dtype) - mean * scale
    return affine_relu(x, scale, offset, axis), mean, variance


def channel_moments(x, axis, dtype):
    """Per-channel ``[mean, variance]`` of ``x`` over every axis but ``axis``: ``(2, C)`` in ``dtype``.

    ``x``: ``(batch, H, W, C)`` (``axis`` -1) or channels first (``axis`` 1). The
    moments ``keras.layers.BatchNormalization`` normalizes with in training
    (``ops.moments`` of ``x`` cast to ``dtype``), with their gradient written out:
    ``dx = (x - mean) * 2 d_variance / n + d_mean / n``, n values per channel.
    TensorFlow's own derivative of the two reductions at an unknown batch size takes
    twice the graph nodes (shapes, gathers, broadcasts: 36 against 18), and every
    node costs TensorFlow memory (see ``recomputed``). Only ``x`` and the mean are
    kept for the gradient (under mixed precision, not a float32 copy of ``x``).
    """
    axis = axis % len(x.shape)
    per_channel = [-1 if i == axis else 1 for i in range(len(x.shape))]

    @ops.custom_gradient
    def moments(x):
        mean, variance = ops.moments(ops.cast(x, dtype),
                                     axes=[i for i in range(len(x.shape)) if i != axis])

        def gradient(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream  # PyTorch passes it by name
            per_value = x.shape[axis] / ops.cast(ops.size(x), dtype)  # 1 / n
            d_mean, d_variance = ops.unstack(ops.reshape(upstream * per_value,
                                                         (2, *per_channel)))
            centred = ops.cast(x, dtype) - ops.reshape(mean, per_channel)
            return ops.cast(centred * (2.0 * d_variance) + d_mean, x.dtype)
        return ops.stack([mean, variance]), gradient

    return moments(x)


def statistics_dtype(layer):
    """The dtype of a BN's batch statistics and affine map, as ``keras.layers.BatchNormalization``
    has them: ``layer``'s compute dtype, at least float32 (float32 under mixed precision).

    Under floatx float64: float64 on TensorFlow; float32 on JAX and PyTorch (Keras' promotion).
    """
    return keras.backend.result_type(layer.compute_dtype, "float32")


def update_moving_statistics(batch_norm, mean, variance):
    """One moving-average step of ``batch_norm``'s statistics towards the batch's."""
    momentum = batch_norm.momentum
    batch_norm.moving_mean.assign(
        batch_norm.moving_mean * momentum + ops.stop_gradient(mean) * (1.0 - momentum))
    batch_norm.moving_variance.assign(
        batch_norm.moving_variance * momentum + ops.stop_gradient(variance) * (1.0 - momentum))


def affine_relu(x, scale, offset, axis):
    """``relu(x * scale + offset)`` in ``scale``'s dtype, per channel along ``axis`` (1: channels
    first)."""
    if axis == 1:
        scale, offset = ops.reshape(scale, (-1, 1, 1)), ops.reshape(offset, (-1, 1, 1))
    return ops.relu(ops.cast(x, scale.dtype) * scale + offset)


