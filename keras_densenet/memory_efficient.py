"""Memory-efficient dense layers (Pleiss et al., "Memory-Efficient Implementation of DenseNets", 2017).

In a plain DenseNet every dense layer stores, for the backward pass, the
concatenation of all earlier feature maps and its BN and ReLU outputs: three
tensors whose size grows with the layer index, so training memory grows
quadratically with depth. ``RecomputedConcatConv`` takes the earlier feature
maps as a list and computes concat -> BN -> ReLU -> conv inside ``keras.remat``
(``tf.recompute_grad`` / ``jax.checkpoint`` / ``torch.utils.checkpoint``): only
its inputs (the individual feature maps, stored once for the whole block) and
its output are kept, and the rest is recomputed during back-propagation.

Its BatchNormalization moving statistics are updated once per training step,
outside the recomputed function, exactly as ``keras.layers.BatchNormalization``
would update them; gradients equal those of the plain layers. The layer owns a
``BatchNormalization`` and a ``Conv2D`` named like the plain model's
(``block{b}_layer{l}_bn1``/``_conv1``), so weights move between the two
layouts by layer name (``transfer_weights``).
"""

import keras
from keras import ops

from keras_densenet.blocks import BlockSettings


@keras.saving.register_keras_serializable(package="keras_densenet")
class RecomputedConcatConv(keras.layers.Layer):
    """concat -> BN -> ReLU -> conv over a list of feature maps, recomputed in backward.

    Args:
        filters: output channels of the conv.
        kernel_size: conv kernel size (1 for the bottleneck, 3 without bottleneck).
        prefix: names of the owned layers: ``{prefix}_bn{suffix}``, ``{prefix}_conv{suffix}``.
        suffix: ``"1"`` for the bottleneck, ``"2"`` for a 3x3 conv.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        bn_epsilon: BatchNormalization epsilon.
        weight_decay: as ``blocks.BlockSettings.weight_decay``.

    Call arguments:
        inputs: list of feature maps ``(batch, H, W, C_i)`` (or channels first).
        training: training mode (batch statistics, one moving-average update).

    Output: ``(batch, H, W, filters)``.
    """

    def __init__(self, filters, kernel_size, prefix, suffix, data_format="channels_last",
                 bn_epsilon=1.001e-5, weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = filters, kernel_size
        self.prefix, self.suffix = prefix, suffix
        self.data_format, self.bn_epsilon, self.weight_decay = data_format, bn_epsilon, weight_decay
        settings = BlockSettings(data_format=data_format, bn_epsilon=bn_epsilon,
                                 weight_decay=weight_decay)
        self.channel_axis = settings.channel_axis
        self.bn = settings.batch_norm(f"{prefix}_bn{suffix}")
        self.conv = settings.conv(filters, kernel_size, f"{prefix}_conv{suffix}")

    def build(self, input_shapes):
        shape = list(input_shapes[0])
        shape[self.channel_axis] = sum(s[self.channel_axis] for s in input_shapes)
        self.bn.build(tuple(shape))
        self.conv.build(tuple(shape))

    def call(self, inputs, training=None):
        if not training:
            x = ops.concatenate(inputs, axis=self.channel_axis)
            return self.conv(ops.relu(self.bn(x, training=False)))
        self._update_moving_statistics(inputs)
        return keras.remat(self._forward)(*inputs)

    def _forward(self, *features):
        """The recomputed part: concat -> BN (batch statistics) -> ReLU -> conv."""
        x = ops.concatenate(features, axis=self.channel_axis)
        dtype = x.dtype
        x = ops.cast(x, "float32") if dtype in ("float16", "bfloat16") else x
        mean, variance = ops.moments(x, axes=self.bn._reduction_axes)
        x = ops.batch_normalization(
            x, mean, variance, axis=self.bn.axis, offset=ops.cast(self.bn.beta, x.dtype),
            scale=ops.cast(self.bn.gamma, x.dtype), epsilon=self.bn.epsilon)
        return self.conv(ops.cast(ops.relu(x), dtype))

    def _update_moving_statistics(self, inputs):
        """The moving-average update of ``keras.layers.BatchNormalization``, done once."""
        if not self.bn.trainable:
            return
        x = ops.stop_gradient(ops.concatenate(inputs, axis=self.channel_axis))
        x = ops.cast(x, "float32") if x.dtype in ("float16", "bfloat16") else x
        mean, variance = ops.moments(x, axes=self.bn._reduction_axes)
        momentum = self.bn.momentum
        self.bn.moving_mean.assign(self.bn.moving_mean * momentum + mean * (1.0 - momentum))
        self.bn.moving_variance.assign(
            self.bn.moving_variance * momentum + variance * (1.0 - momentum))

    def compute_output_shape(self, input_shapes):
        shape = list(input_shapes[0])
        shape[self.channel_axis] = self.filters
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "prefix": self.prefix, "suffix": self.suffix,
                "data_format": self.data_format, "bn_epsilon": self.bn_epsilon,
                "weight_decay": self.weight_decay}


def weighted_layers(model):
    """``{name: layer}`` of every layer holding weights, nested ones included."""
    return {layer.name: layer for layer in model._flatten_layers(include_self=False)
            if layer.weights and not isinstance(layer, (RecomputedConcatConv, keras.Model))}


def transfer_weights(source, target):
    """Copy weights from ``source`` to ``target`` by layer name (plain <-> memory-efficient)."""
    sources, targets = weighted_layers(source), weighted_layers(target)
    if sorted(sources) != sorted(targets):
        raise ValueError(f"Models {source.name!r} and {target.name!r} do not have the same "
                         f"weighted layers: {sorted(set(sources) ^ set(targets))[:5]}...")
    for name, layer in targets.items():
        layer.set_weights(sources[name].get_weights())
