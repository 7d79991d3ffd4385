"""The layers of the memory-efficient modes: same variables and weight-file names as the plain
layers they stand for, computing their part in a recomputed function.

=============================  ==================================  ==========================
class                          stands for (name in weight files)   computes
=============================  ==================================  ==========================
``ConcatenationBatchNorm``     ``BatchNormalization``              BN of a concatenation, as
                                                                   a per-channel affine map
``RecomputedConv``             ``Conv2D``                          conv(relu(affine(concat)))
``KernelConv2D``               ``Conv2D``                          passes on its kernel
``RecomputedDenseLayer``       ``BatchNormalization`` (``_bn2``)   a whole bottleneck layer
``RecomputedStem``             ``BatchNormalization`` (``stem_bn``) conv-BN-ReLU-pool of the stem
``weights_layer(base, name)``  ``base`` (e.g. ``Conv2D``)          passes on its weights
=============================  ==================================  ==========================

Keras weight files (``save_weights``) address layers by snake-cased class
name and position, so each class carries the Keras class name whose variables
it holds (``_layer_class``); ``.keras`` files find it by its
registered name (``keras_densenet>BatchNormalization`` etc., as saved by every
earlier version). ``get_weights()`` lists and the optimizer's variables, which
go by layer order, put a layer's ``_conv2`` before its ``_bn2`` with
``memory_efficient="full"``: copy weights between modes by variable path or
file (``memory_modes``).
"""

import keras
from keras import ops

from keras_densenet.layers import blur_pool
from keras_densenet.memory_efficient.moments import (affine_relu, batch_norm_relu,
                                                     statistics_dtype, update_moving_statistics)
from keras_densenet.memory_efficient.recompute import concatenation_or_concat, recomputed


def _layer_class(weight_file_name, registered_name):
    """Register a layer class as ``keras_densenet>{registered_name}`` (the name every
    earlier version saved it under) and give it the Keras class name whose weights it
    holds: ``save_weights`` files address layers by snake-cased class name and position
    (``batch_normalization_3``), so the plain model's files load unchanged."""
    def decorate(cls):
        cls = keras.saving.register_keras_serializable("keras_densenet", registered_name)(cls)
        cls.__name__ = cls.__qualname__ = weight_file_name
        return cls
    return decorate


@_layer_class("BatchNormalization", "BatchNormalization")
class ConcatenationBatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization of a concatenation, returned as a per-channel affine map.

    Same arguments and variables as ``keras.layers.BatchNormalization`` (and the
    same class name: Keras weight files address layers by class name and
    position, so the plain model's files load unchanged). It never sees the
    concatenation, only the ``FeatureMoments`` of its parts.

    Call arguments:
        statistics: list of ``(2, C_i)`` ``[mean, variance]`` tensors, one per
            concatenated feature map.
        training: batch statistics and one moving-average update (as
            ``keras.layers.BatchNormalization``), else the moving statistics.

    Returns:
        ``(scale, offset)``, two ``(C,)`` vectors (``C = sum C_i``) in
        ``statistics_dtype(self)``, with
        ``BN(concat(features)) == concat(features) * scale + offset``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # statistics_dtype, also under mixed precision

    def build(self, statistics_shape):
        channels = sum(shape[-1] for shape in statistics_shape)
        super().build((None, channels, None, None) if self.axis == 1 else (None, None, None, channels))
        self.input_spec = None

    def call(self, statistics, training=None):
        dtype = statistics_dtype(self)
        if training and self.trainable:
            mean, variance = ops.unstack(ops.concatenate(statistics, axis=-1))
            update_moving_statistics(self, mean, variance)
        else:
            mean = ops.cast(self.moving_mean, dtype)
            variance = ops.cast(self.moving_variance, dtype)
        scale = ops.cast(self.gamma, dtype) * ops.rsqrt(variance + self.epsilon)
        return scale, ops.cast(self.beta, dtype) - mean * scale

    def compute_output_spec(self, statistics):
        channels = sum(s.shape[-1] for s in statistics)
        return (keras.KerasTensor((channels,), statistics_dtype(self)),
                keras.KerasTensor((channels,), statistics_dtype(self)))


def _concatenated_shape(shapes, axis):
    shape = list(shapes[0])
    shape[axis] = sum(s[axis] for s in shapes)
    return tuple(shape)


@_layer_class("Conv2D", "Conv2D")
class RecomputedConv(keras.layers.Conv2D):
    """``conv(relu(concat(features) * scale + offset))``, recomputed in the backward pass.

    Same arguments and variables as ``keras.layers.Conv2D``, without bias or
    activation (DenseNet convs have neither).

    Call arguments:
        features: list of ``(batch, H, W, C_i)`` maps (or channels first).
        scale, offset: ``(sum C_i,)`` vectors from ``ConcatenationBatchNorm``.
        concatenation: ``concat(features)``, if the graph has it (see ``recomputed``);
            default: concatenated here (``.keras`` files of earlier releases).
        training: recompute in the backward pass (inference stores nothing anyway).

    Output: ``(batch, H', W', filters)``, in the layer's compute dtype.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.use_bias or self.activation is not keras.activations.linear:
            raise ValueError("RecomputedConv takes no bias and no activation: "
                             "pass use_bias=False and activation=None.")
        self._convert_input_args = False  # scale and offset in statistics_dtype
        self.input_spec = None  # Conv2D's spec is for one tensor

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, features_shape):
        super().build(_concatenated_shape(features_shape, self._channel_axis))
        self.input_spec = None

    def call(self, features, scale, offset, concatenation=None, training=None):
        if training:
            return recomputed(self._forward, features, concatenation, self._channel_axis,
                              scale, offset)
        x = concatenation_or_concat(features, concatenation, self._channel_axis)
        return self._forward(x, scale, offset)

    def _forward(self, x, scale, offset):
        x = ops.cast(affine_relu(x, scale, offset, self._channel_axis), self.compute_dtype)
        # Cast explicitly: the recomputation runs outside the layer's autocast scope.
        return self.convolution_op(x, ops.cast(self.kernel, self.compute_dtype))

    def compute_output_spec(self, features, scale, offset, concatenation=None):
        shape = _concatenated_shape([f.shape for f in features], self._channel_axis)
        return keras.KerasTensor(self.compute_output_shape(shape), self.compute_dtype)


@_layer_class("Conv2D", "KernelConv2D")
class KernelConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` that holds its kernel for ``RecomputedDenseLayer``, which convolves.

    Same arguments and variables as ``keras.layers.Conv2D`` (no bias, no
    activation), and the class name ``Conv2D`` (see ``_layer_class``).

    Args:
        input_channels: the kernel's input channels; default: the last axis of
            ``previous``.

    Call: ``previous``, a tensor whose last axis has the kernel's input channels:
    the ``(C,)`` scale of the BN before it, or the previous conv's kernel (or,
    with ``input_channels``, any tensor, e.g. the image), so that the layer
    follows them in the model's layer order. Returns the kernel,
    ``(kernel_size, kernel_size, input channels, filters)``, in the compute dtype.
    """

    def __init__(self, *args, input_channels=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.use_bias or self.activation is not keras.activations.linear:
            raise ValueError("KernelConv2D takes no bias and no activation: "
                             "pass use_bias=False and activation=None.")
        self.input_channels = input_channels
        self._convert_input_args = False
        self.input_spec = None

    def build(self, previous_shape):
        channels = self.input_channels or previous_shape[-1]
        super().build((None, None, None, channels) if self.data_format == "channels_last"
                      else (None, channels, None, None))
        self.input_spec = None

    def get_config(self):
        return {**super().get_config(), "input_channels": self.input_channels}

    def call(self, previous):
        return ops.cast(self.kernel, self.compute_dtype)

    def compute_output_spec(self, previous):
        return keras.KerasTensor(self.kernel.shape, self.compute_dtype)


@_layer_class("BatchNormalization", "DenseLayerBatchNormalization")
class RecomputedDenseLayer(keras.layers.BatchNormalization):
    """A whole bottleneck dense layer, recomputed in the backward pass: ``memory_efficient="full"``.

    The layer's second BN (``block{b}_layer{l}_bn2``): same arguments and
    variables as ``keras.layers.BatchNormalization``, class name
    ``BatchNormalization`` (see ``_layer_class``). It computes

        ``conv2(relu(BN2(conv1(relu(concat(features) * scale + offset)))))``

    recomputed in the backward pass (``recomputed``), which keeps only the
    feature maps (each once per block), small vectors and kernels, and its
    ``growth_rate`` output maps. In training, BN2 normalizes with the batch
    moments of conv1's output, which the recomputed function also returns, so
    that the moving statistics are updated once per step, outside the
    recomputation.

    Call arguments:
        features: list of ``(batch, H, W, C_i)`` maps (or channels first).
        scale, offset: ``(sum C_i,)``, BN1 as an affine map
            (``ConcatenationBatchNorm``).
        conv1_kernel: ``(1, 1, sum C_i, F)`` and conv2_kernel: ``(3, 3, F, k)``,
            from ``KernelConv2D`` layers, in the compute dtype.
        concatenation: ``concat(features)``, if the graph has it (see ``recomputed``);
            default: concatenated here (``.keras`` files of earlier releases).
        training: batch moments, moving-average update and recomputation; else
            the moving statistics.

    Output: ``(batch, H, W, k)`` in the compute dtype.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # scale and offset in statistics_dtype

    def build(self, features_shape, conv1_kernel_shape):
        channels = conv1_kernel_shape[-1]
        super().build((None, channels, None, None) if self.axis == 1 else (None, None, None, channels))
        self.input_spec = None

    def call(self, features, scale, offset, conv1_kernel, conv2_kernel, concatenation=None,
             training=None):
        if not (training and self.trainable):
            x = concatenation_or_concat(features, concatenation, self.axis)
            return self._forward(False, x, scale, offset, conv1_kernel, conv2_kernel)[0]
        new, mean, variance = recomputed(self._forward_with_moments, features, concatenation,
                                         self.axis, scale, offset, conv1_kernel, conv2_kernel)
        update_moving_statistics(self, mean, variance)
        return new

    def _forward_with_moments(self, *args):
        return self._forward(True, *args)

    def _forward(self, batch_moments, x, scale, offset, conv1_kernel, conv2_kernel):
        """``(new maps, mean, variance)`` of the concatenation ``x``: conv1's batch moments,
        or the moving ones."""
        axis = self.axis % 4
        x = affine_relu(x, scale, offset, axis)
        data_format = "channels_first" if axis == 1 else "channels_last"
        y = ops.conv(ops.cast(x, conv1_kernel.dtype), conv1_kernel, padding="same",
                     data_format=data_format)
        x, mean, variance = batch_norm_relu(self, y, batch_moments, axis)
        new = ops.conv(ops.cast(x, conv2_kernel.dtype), conv2_kernel, padding="same",
                       data_format=data_format)
        return new, ops.stop_gradient(mean), ops.stop_gradient(variance)

    def compute_output_spec(self, features, scale, offset, conv1_kernel, conv2_kernel,
                            concatenation=None):
        shape = list(features[0].shape)
        shape[self.axis] = conv2_kernel.shape[-1]
        return keras.KerasTensor(tuple(shape), self.compute_dtype)


@_layer_class("BatchNormalization", "StemBatchNormalization")
class RecomputedStem(keras.layers.BatchNormalization):
    """The ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool), recomputed in the backward pass.

    ``stem_bn`` with ``memory_efficient="full"``: same arguments and variables as
    ``keras.layers.BatchNormalization``, class name ``BatchNormalization`` (see
    ``_layer_class``); ``stem_conv`` is a ``KernelConv2D`` that
    passes on its kernel. It computes ``maxpool(relu(BN(conv(image))))``, the
    plain stem's ``stem_pad``, ``stem_conv``, ``stem_bn``, ``stem_relu``,
    ``stem_pool_pad`` and ``stem_pool`` (and ``stem_blur``), inside ``keras.remat``,
    so that only the image and the pooled maps are stored, not the padded image,
    the conv output and its BN, ReLU and padded maps (four tensors of the conv
    output's size: about 3.2 MB each per 224px image in float32). In training it
    normalizes with the batch moments, which the recomputed function also
    returns, so that the moving statistics are updated once, outside the
    recomputation.

    Args:
        pool_padding: ``"symmetric"`` (zero padding 3 and a valid conv, zero
            padding 1 and a valid pool: after ReLU zeros equal -inf padding) or
            ``"same"`` (TensorFlow's "same" padding for both; the stem's ``padding``).
        anti_alias: a 3x3/1 max pool then ``layers.blur_pool`` (stride 2), as
            ``stem_pool`` and ``stem_blur`` of the anti-aliased stem; default: 3x3/2.

    Call: ``image`` ``(batch, H, W, C)`` (or channels first) and the conv's
    ``kernel`` ``(7, 7, C, F)`` -> ``(batch, H', W', F)`` in the compute dtype,
    ``H' = ((H - 1) // 2) // 2 + 1``. Without ``kernel``, ``image`` is the output
    of the stem's last conv (``H' = (H - 1) // 2 + 1``), and only BN-ReLU-pool are
    recomputed: ``stem_bn3`` of the deep stem, and ``stem_bn`` in ``.keras`` files
    saved by earlier releases, whose ``stem_conv`` is a plain ``Conv2D``.
    """

    def __init__(self, pool_padding="symmetric", anti_alias=False, **kwargs):
        super().__init__(**kwargs)
        if pool_padding not in ("symmetric", "same"):
            raise ValueError(f"pool_padding must be 'symmetric' or 'same'; got {pool_padding!r}.")
        self.pool_padding = pool_padding
        self.anti_alias = anti_alias

    def build(self, image_shape, kernel_shape=None):
        channels = kernel_shape[-1] if kernel_shape else image_shape[self.axis]
        super().build((None, channels, None, None) if self.axis == 1 else (None, None, None, channels))
        self.input_spec = None

    def call(self, image, kernel=None, training=None):
        if not (training and self.trainable):
            return self._forward(False, image, kernel)[0]
        inputs = (image,) if kernel is None else (image, kernel)  # remat takes no None
        pooled, mean, variance = keras.remat(self._forward_with_moments)(*inputs)
        update_moving_statistics(self, mean, variance)
        return pooled

    def _forward_with_moments(self, image, kernel=None):
        return self._forward(True, image, kernel)

    def _forward(self, batch_moments, image, kernel):
        """``(pooled maps, mean, variance)``: the batch moments, or the moving ones."""
        axis = self.axis % 4
        data_format = "channels_first" if axis == 1 else "channels_last"
        symmetric = self.pool_padding == "symmetric"
        padding = "valid" if symmetric else "same"
        spatial = [i for i in range(1, 4) if i != axis]
        x = image
        if kernel is not None:
            x = ops.cast(x, kernel.dtype)
            if symmetric:
                x = ops.pad(x, [[3, 3] if i in spatial else [0, 0] for i in range(4)])
            x = ops.conv(x, kernel, strides=2, padding=padding, data_format=data_format)
        x, mean, variance = batch_norm_relu(self, x, batch_moments, axis)
        x = ops.cast(x, self.compute_dtype)
        if symmetric:
            x = ops.pad(x, [[1, 1] if i in spatial else [0, 0] for i in range(4)])
        x = ops.max_pool(x, 3, strides=1 if self.anti_alias else 2, padding=padding,
                         data_format=data_format)
        if self.anti_alias:
            x = blur_pool(x, data_format)
        return x, ops.stop_gradient(mean), ops.stop_gradient(variance)

    def compute_output_spec(self, image, kernel=None):
        shape = list(image.shape)
        if kernel is not None:
            shape[self.axis % 4] = kernel.shape[-1]
        for i in [i for i in range(1, 4) if i != self.axis % 4]:
            for _ in range(1 if kernel is None else 2):  # the pool (or blur), after the conv
                shape[i] = None if shape[i] is None else (shape[i] - 1) // 2 + 1
        return keras.KerasTensor(tuple(shape), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "pool_padding": self.pool_padding,
                "anti_alias": self.anti_alias}


def weights_layer(base, registered_name):
    """A subclass of the weighted layer class ``base`` that passes on its weights: a recomputed
    layer computes with them (RDNet's memory-efficient modes; ``KernelConv2D`` is DenseNet's
    bias-free conv case).

    Same arguments and variables as ``base``, the class name of ``base`` (see
    ``_layer_class``: weight files load as into the plain layer), registered as
    ``keras_densenet>{registered_name}``.

    Args (besides ``base``'s):
        input_channels: the channels of the input the plain layer reads, which
            fix its weights' shapes.

    Call: ``previous``, any tensor (the previous weights layer's first output, so that
    the layers come in the plain model's order) -> a tuple of the layer's weights
    (``base``'s order, e.g. ``(kernel, bias)``), in the compute dtype.
    """

    @_layer_class(base.__name__, registered_name)
    class WeightsLayer(base):
        def __init__(self, *args, input_channels, **kwargs):
            super().__init__(*args, **kwargs)
            self.input_channels = input_channels
            self._convert_input_args = False
            self.input_spec = None

        def build(self, previous_shape):
            channels_first = getattr(self, "data_format", "channels_last") == "channels_first"
            super().build((None, self.input_channels, None, None) if channels_first
                          else (None, None, None, self.input_channels))
            self.input_spec = None

        def call(self, previous):
            return tuple(ops.cast(weight, self.compute_dtype) for weight in self.weights)

        def compute_output_spec(self, previous):
            return tuple(keras.KerasTensor(weight.shape, self.compute_dtype)
                         for weight in self.weights)

        def get_config(self):
            return {**super().get_config(), "input_channels": self.input_channels}

    return WeightsLayer
