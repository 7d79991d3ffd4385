"""Memory-efficient dense layers (Pleiss et al., "Memory-Efficient Implementation of DenseNets", 2017).

In a plain DenseNet every dense layer stores, for the backward pass, the
concatenation of all earlier feature maps and its BN and ReLU outputs: tensors
whose size grows with the layer index, so training memory grows quadratically
with depth. Here each dense layer's concat -> BN -> ReLU -> conv is split into
two layers that keep the plain model's names and weights:

- ``block{b}_layer{l}_bn1``: a ``BatchNormalization`` (the variables of a
  ``BatchNormalization``) that turns the list of earlier feature maps into the
  per-channel affine ``(scale, offset)`` of BN on their concatenation, and
  updates the moving statistics, once per training step.
- ``block{b}_layer{l}_conv1``: a ``Conv2D`` (the kernel of a
  ``Conv2D``) computing ``conv(relu(concat(features) * scale + offset))``.

Both computations run inside ``keras.remat`` (``tf.recompute_grad``,
``jax.checkpoint``, ``torch.utils.checkpoint``): the backward pass keeps only
their inputs (each feature map once per block, two ``(C,)`` vectors) and
outputs, and recomputes the concatenation and the BN-ReLU output. Gradients are
those of the plain layers. Because the weighted layers are the plain model's
layers, with the same names and variables, weight files (``save_weights``,
``.keras``) move between the two layouts unchanged.
"""

import keras
from keras import ops


def recomputed_bn_relu_conv(features, settings, filters, kernel_size, prefix, suffix):
    """concat -> BN -> ReLU -> conv over ``features``, recomputed in the backward pass.

    Args:
        features: list of ``(batch, H, W, C_i)`` maps (channels first: ``(batch, C_i, H, W)``).
        settings: ``blocks.BlockSettings`` (regularizers, epsilon, data format).
        filters: output channels of the conv.
        kernel_size: 1 (the bottleneck conv) or 3 (a conv without bottleneck).
        prefix, suffix: layer names ``{prefix}_bn{suffix}`` and ``{prefix}_conv{suffix}``.

    Returns:
        ``(batch, H, W, filters)``.
    """
    scale, offset = settings.batch_norm(
        f"{prefix}_bn{suffix}", layer_class=BatchNormalization)(features)
    conv = settings.conv(filters, kernel_size, f"{prefix}_conv{suffix}",
                         layer_class=Conv2D)
    return conv(features, scale, offset)


def _concatenated_shape(shapes, axis):
    shape = list(shapes[0])
    shape[axis] = sum(s[axis] for s in shapes)
    return tuple(shape)


@keras.saving.register_keras_serializable(package="keras_densenet")
class BatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization of a concatenation, returned as a per-channel affine map.

    Same arguments and variables as ``keras.layers.BatchNormalization``. The
    concatenated tensor is never stored: its moments are recomputed in the
    backward pass.

    Call arguments:
        features: list of feature maps, concatenated along ``axis``.
        training: batch statistics and one moving-average update (as
            ``BatchNormalization``), else the moving statistics.

    Returns:
        ``(scale, offset)``, two float32 ``(C,)`` vectors (``C``: the channels of
        the concatenation) with ``BN(concat(features)) == concat(features) * scale + offset``.
    """

    def build(self, features_shape):
        super().build(_concatenated_shape(features_shape, self.axis))
        self.input_spec = None

    def call(self, features, training=None):
        if training and self.trainable:
            mean, variance = keras.remat(self._batch_moments)(*features)
            momentum = self.momentum
            self.moving_mean.assign(
                self.moving_mean * momentum + ops.stop_gradient(mean) * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + ops.stop_gradient(variance) * (1.0 - momentum))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        scale = self.gamma * ops.rsqrt(variance + self.epsilon)
        return scale, self.beta - mean * scale

    def _batch_moments(self, *features):
        x = ops.cast(ops.concatenate(features, axis=self.axis), "float32")
        return ops.moments(x, axes=self._reduction_axes)

    def compute_output_spec(self, features):
        channels = _concatenated_shape([f.shape for f in features], self.axis)[self.axis]
        return keras.KerasTensor((channels,), "float32"), keras.KerasTensor((channels,), "float32")


@keras.saving.register_keras_serializable(package="keras_densenet")
class Conv2D(keras.layers.Conv2D):
    """``conv(relu(concat(features) * scale + offset))``, recomputed in the backward pass.

    Same arguments and variables as ``keras.layers.Conv2D``, without bias or
    activation (DenseNet convs have neither).

    Call arguments:
        features: list of ``(batch, H, W, C_i)`` maps (or channels first).
        scale, offset: float32 ``(sum C_i,)`` vectors from ``BatchNormalization``.
        training: recompute in the backward pass (inference stores nothing anyway).

    Output: ``(batch, H', W', filters)``, in the layer's compute dtype.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.use_bias or self.activation is not keras.activations.linear:
            raise ValueError("Conv2D takes no bias and no activation: "
                             "pass use_bias=False and activation=None.")
        # scale and offset stay float32 under mixed precision, as inside BatchNormalization.
        self._convert_input_args = False
        self.input_spec = None  # Conv2D's spec is for one tensor

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, features_shape):
        super().build(_concatenated_shape(features_shape, self._channel_axis))
        self.input_spec = None

    def call(self, features, scale, offset, training=None):
        if training:
            return keras.remat(self._forward)(scale, offset, *features)
        return self._forward(scale, offset, *features)

    def _forward(self, scale, offset, *features):
        x = ops.cast(ops.concatenate(features, axis=self._channel_axis), "float32")
        if self._channel_axis == 1:
            scale, offset = ops.reshape(scale, (-1, 1, 1)), ops.reshape(offset, (-1, 1, 1))
        x = ops.cast(ops.relu(x * scale + offset), self.compute_dtype)
        # Cast explicitly: the recomputation runs outside the layer's autocast scope.
        return self.convolution_op(x, ops.cast(self.kernel, self.compute_dtype))

    def compute_output_spec(self, features, scale, offset):
        shape = _concatenated_shape([f.shape for f in features], self._channel_axis)
        return keras.KerasTensor(self.compute_output_shape(shape), self.compute_dtype)


def weighted_layers(model):
    """``{name: layer}`` of every layer holding weights, nested ones included."""
    return {layer.name: layer for layer in model._flatten_layers(include_self=False)
            if layer.weights and not isinstance(layer, keras.Model)}
