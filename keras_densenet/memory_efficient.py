"""Memory-efficient dense layers (Pleiss et al., "Memory-Efficient Implementation of DenseNets", 2017).

In a plain DenseNet every dense layer stores, for the backward pass, the
concatenation of all earlier feature maps and its BN and ReLU outputs: tensors
whose size grows with the layer index, so training memory grows quadratically
with depth. Here each dense layer's concat -> BN -> ReLU -> conv is done by two
layers that keep the plain model's names, classes and weights:

- ``block{b}_layer{l}_bn1``: a ``BatchNormalization`` (the variables of
  ``keras.layers.BatchNormalization``) that turns the moments of the earlier
  feature maps into the per-channel affine ``(scale, offset)`` of BN on their
  concatenation, and updates the moving statistics, once per training step.
- ``block{b}_layer{l}_conv1``: a ``Conv2D`` (the kernel of ``keras.layers.Conv2D``)
  computing ``conv(relu(concat(features) * scale + offset))``, recomputed in
  the backward pass (``recomputed``): it keeps only the feature maps (each
  once per block), two ``(C,)`` vectors and its output, and recomputes the
  concatenation and the BN-ReLU output.

As in the plain block, each layer's input is the previous layer's input
concatenated with its output (``block{b}_layer{l}_concat``), but that
concatenation is only read in the forward pass: on TensorFlow and JAX its
gradient flows back through this chain, so each layer adds O(1) graph nodes
and each map's gradient is summed layer by layer (``recomputed``). The moments
of a concatenation are the concatenated per-channel moments of its parts, so each
feature map's moments are computed once and appended to the earlier maps'
(``FeatureMoments``, ``block{b}_moments{i}``): O(depth), not O(depth^2).
Gradients are those of the plain layers. Without bottleneck the recomputed
conv is the 3x3 ``_conv2`` after ``_bn2``. Because the weighted layers have the
plain model's names and classes, weight files (``save_weights``, ``weights=``)
move between the two layouts unchanged, and ``.keras`` files load either way.

``memory_efficient="full"`` recomputes each whole bottleneck dense layer, so
that only its ``growth_rate`` new maps are stored (``recomputed_dense_layer``):
``_bn1`` is the ``BatchNormalization`` above, ``_conv1`` and ``_conv2`` are
``KernelConv2D`` layers that only pass on their kernels, and ``_bn2``
(``DenseLayerBatchNormalization``) computes BN1-ReLU-conv1-BN2-ReLU-conv2 in one
recomputed function, normalizing with conv1's batch moments, which it also returns
so that its moving statistics are updated once, outside the recomputation.
Dropout (on the ``growth_rate`` maps) stays outside: a recomputation would draw
another mask. The ImageNet stem's conv-BN-ReLU-max pool (and blur) is recomputed too
(``StemBatchNormalization``); in the deep stem only the three convs' outputs are
stored (``blocks.stem``).
The transitions' BN-ReLU-conv are the ``BatchNormalization``/``Conv2D`` pair
above, so no block concatenation is stored either. Weight files keep working
because they address layers by class name and position within that class
(``_named_for_weight_files``);
``get_weights()`` lists and the optimizer's variables, which go by layer order,
put a layer's ``_conv2`` before its ``_bn2`` in this mode: copy weights between
modes by variable path or file; a checkpoint with optimizer state (e.g.
``BackupAndRestore``'s) loads into another mode through the model's
``load_weights`` (``model.DenseNetModel.load_weights``).
"""

import keras
from keras import ops

from keras_densenet.layers import blur_pool


def recomputed_bn_relu_conv(concatenation, features, statistics, settings, filters, kernel_size,
                            bn_name, conv_name):
    """concat -> BN -> ReLU -> conv over ``features``, recomputed in the backward pass.

    Args:
        concatenation: ``concat(features)``, ``(batch, H, W, sum C_i)``, from the block's
            chain of ``Concatenate`` layers (see ``recomputed``).
        features: list of ``(batch, H, W, C_i)`` maps (channels first: ``(batch, C_i, H, W)``).
        statistics: their ``FeatureMoments``: one ``(2, sum C_i)`` tensor.
        settings: ``blocks.BlockSettings`` (regularizers, epsilon, data format).
        filters: output channels of the conv.
        kernel_size: 1 (the bottleneck conv) or 3 (a conv without bottleneck or in the stem);
            stride 1, "same" padding.
        bn_name, conv_name: the names of the ``BatchNormalization`` and ``Conv2D`` layers.

    Returns:
        ``(batch, H, W, filters)``.
    """
    scale, offset = settings.batch_norm(bn_name, layer_class=BatchNormalization)([statistics])
    conv = settings.conv(filters, kernel_size, conv_name, layer_class=Conv2D)
    return conv(features, scale, offset, concatenation=concatenation)


def recomputed_dense_layer(concatenation, features, statistics, settings, growth_rate,
                           bottleneck_width, prefix):
    """A whole bottleneck dense layer (BN1-ReLU-conv1-BN2-ReLU-conv2), recomputed in backprop.

    Args:
        concatenation, features, statistics, settings: as ``recomputed_bn_relu_conv``.
        growth_rate: output channels (k).
        bottleneck_width: conv1 produces ``bottleneck_width * growth_rate`` channels.
        prefix: ``block{b}_layer{l}``: the layers ``_bn1``, ``_conv1``, ``_conv2``
            (``KernelConv2D``) and ``_bn2`` (``DenseLayerBatchNormalization``, which computes).

    Returns:
        ``(batch, H, W, growth_rate)``.
    """
    scale, offset = settings.batch_norm(
        f"{prefix}_bn1", layer_class=BatchNormalization)([statistics])
    conv1_kernel = settings.conv(bottleneck_width * growth_rate, 1, f"{prefix}_conv1",
                                 layer_class=KernelConv2D)(scale)
    conv2_kernel = settings.conv(growth_rate, 3, f"{prefix}_conv2",
                                 layer_class=KernelConv2D)(conv1_kernel)
    bn2 = settings.batch_norm(f"{prefix}_bn2", layer_class=DenseLayerBatchNormalization)
    return bn2(features, scale, offset, conv1_kernel, conv2_kernel, concatenation=concatenation)


def recomputed(function, features, concatenation, axis, *args):
    """``function(concat(features), *args)``, recomputed in the backward pass from ``features``.

    Only ``features`` (stored anyway: every later layer reads them), ``args``
    and the outputs are kept for the backward pass, not the concatenation.

    On TensorFlow ``function`` reads ``concatenation`` (``concat(features)``, from
    the block's chain of ``Concatenate`` layers, each adding one map to the
    previous layer's) and sends its whole gradient back to it: the chain then
    sums each map's gradient layer by layer, as the plain model's backward pass
    does, and a layer adds O(1) graph nodes, however many maps it reads (a
    gradient for each of them would be O(depth^2) nodes per block, each costing
    TensorFlow about 20 KB of memory, and TensorFlow would hold each map's parts
    until the last arrives). The backward pass recomputes the concatenation
    from ``features`` (``keras.remat`` of ``function`` would store it), and
    passes on the concatenation's gradient, which the next recomputation waits
    for, only once this one's other gradients are computed: otherwise
    TensorFlow's executor may start the next while this one's concatenation-wide
    transients are still alive (DenseNet-BC L=250, batch 64: a peak of about
    1120 MB of tensors in three runs of four without this, 777-901 MB in four
    with it). JAX
    does the same (``_recomputed_jax``; without ``concatenation`` it
    concatenates the maps in the forward pass). On PyTorch, or on TensorFlow
    without ``concatenation`` (``.keras`` files of keras-densenet 0.2.0),
    ``keras.remat`` (``torch.utils.checkpoint``, ``tf.recompute_grad``)
    recomputes ``concat(features)`` and ``function``, each map getting its own
    gradient part.

    Args:
        function: ``(x, *args) -> output`` or a tuple of outputs; may read variables.
        features: list of ``(batch, H, W, C_i)`` maps (or channels first).
        concatenation: ``concat(features, axis)`` or ``None``.
        axis: the channel axis.
        args: further tensor arguments (gradients flow to them).
    """
    if keras.backend.backend() == "jax":
        return _recomputed_jax(function, features, _concatenation(features, concatenation, axis),
                               axis, *args)
    if concatenation is None or keras.backend.backend() != "tensorflow":
        def forward(*tensors):
            return function(ops.concatenate(tensors[len(args):], axis=axis), *tensors[:len(args)])
        return keras.remat(forward)(*args, *features)
    import tensorflow as tf

    @tf.custom_gradient
    def forward(x, *tensors):
        def gradient(*output_gradients, variables=()):
            x = _concatenated_after(output_gradients[0], features, axis)
            with tf.GradientTape() as tape:
                tape.watch([x, *tensors])
                outputs = tf.nest.flatten(function(x, *tensors))
            output_gradients = [tf.zeros_like(y) if g is None else g
                                for y, g in zip(outputs, output_gradients)]
            gradients = tape.gradient(outputs, [x, *tensors, *variables], output_gradients,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # The concatenation's gradient leads to the next recomputation: hold it back
            # until the other gradients, the last readers of this one's transients, are done.
            with tf.control_dependencies(gradients[1:]):
                gradients[0] = tf.identity(gradients[0])
            return gradients[:1 + len(tensors)], gradients[1 + len(tensors):]
        return function(x, *tensors), gradient

    return forward(concatenation, *args)


def _recomputed_jax(function, features, concatenation, axis, *args):
    """``recomputed`` on JAX: a ``jax.custom_vjp`` that stores ``features``, not the concatenation.

    ``jax.checkpoint`` (``keras.remat``) saves no memory in a jitted CPU train step
    (jax-ml/jax#19822): its recomputation does not depend on the output gradient,
    so XLA may schedule it in the forward pass and keep its results. Here the
    backward pass recomputes ``concat(features)`` with a data dependency on the
    output gradient, as on TensorFlow; the variables ``function`` reads (tracers
    of the train step) become explicit arguments (``jax.closure_convert``) so that
    they get their gradients.
    """
    import jax
    import jax.numpy as jnp

    converted, constants = jax.closure_convert(function, concatenation, *args)

    def apply(x, args, constants):
        return converted(x, *args, *constants)

    @jax.custom_vjp
    def forward(x, features, args, constants):
        return apply(x, args, constants)

    def forward_keeping_features(x, features, args, constants):
        return apply(x, args, constants), (features, args, constants)

    def backward(saved, output_gradients):
        features, args, constants = saved
        x = _concatenated_after(jax.tree_util.tree_leaves(output_gradients)[0], features, axis)
        _, pullback = jax.vjp(apply, x, args, constants)
        x_gradient, args_gradients, constants_gradients = pullback(output_gradients)
        # The whole gradient goes back through the block's chain of concatenations.
        return (x_gradient, [jnp.zeros_like(f) for f in features], args_gradients,
                constants_gradients)

    forward.defvjp(forward_keeping_features, backward)
    return forward(concatenation, list(features), tuple(args), list(constants))


def _concatenated_after(gradient, features, axis):
    """``concat(features, axis)``, computed only once ``gradient`` (an output gradient) exists.

    The backward passes of ``recomputed`` build the concatenation this way: adding
    0 (NaN if the gradient's first element is NaN) to the last map makes it depend
    on the gradient's data, as ``tf.recompute_grad`` does; else TensorFlow's executor
    or XLA's scheduler may recompute it during the forward pass and hold it until
    the backward pass. Its ops are in the name scope ``recomputed_concatenation``.
    """
    first = ops.reshape(gradient, (-1,))[:1]
    after = ops.cast(ops.where(ops.all(first == first), 0.0, float("nan")), features[-1].dtype)
    with keras.name_scope("recomputed_concatenation"):
        return ops.concatenate([*features[:-1], features[-1] + after], axis=axis)


def _concatenation(features, concatenation, axis):
    """``concatenation`` (the block chain's), or ``concat(features)`` where the graph has none
    (``.keras`` files of keras-densenet 0.2.0): for the forward pass outside training, and
    for ``_recomputed_jax``."""
    return ops.concatenate(features, axis=axis) if concatenation is None else concatenation


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


@keras.saving.register_keras_serializable(package="keras_densenet")
class BatchNormalization(keras.layers.BatchNormalization):
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
            _update_moving_statistics(self, mean, variance)
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


@keras.saving.register_keras_serializable(package="keras_densenet")
class Conv2D(keras.layers.Conv2D):
    """``conv(relu(concat(features) * scale + offset))``, recomputed in the backward pass.

    Same arguments and variables as ``keras.layers.Conv2D``, without bias or
    activation (DenseNet convs have neither).

    Call arguments:
        features: list of ``(batch, H, W, C_i)`` maps (or channels first).
        scale, offset: ``(sum C_i,)`` vectors from ``BatchNormalization``.
        concatenation: ``concat(features)``, if the graph has it (see ``recomputed``);
            default: concatenated here (``.keras`` files of keras-densenet 0.2.0).
        training: recompute in the backward pass (inference stores nothing anyway).

    Output: ``(batch, H', W', filters)``, in the layer's compute dtype.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.use_bias or self.activation is not keras.activations.linear:
            raise ValueError("Conv2D takes no bias and no activation: "
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
        return self._forward(_concatenation(features, concatenation, self._channel_axis),
                             scale, offset)

    def _forward(self, x, scale, offset):
        x = ops.cast(_affine_relu(x, scale, offset, self._channel_axis), self.compute_dtype)
        # Cast explicitly: the recomputation runs outside the layer's autocast scope.
        return self.convolution_op(x, ops.cast(self.kernel, self.compute_dtype))

    def compute_output_spec(self, features, scale, offset, concatenation=None):
        shape = _concatenated_shape([f.shape for f in features], self._channel_axis)
        return keras.KerasTensor(self.compute_output_shape(shape), self.compute_dtype)


def _named_for_weight_files(class_name):
    """Give a layer class the Keras class name whose weights it holds.

    ``save_weights`` files address layers by snake-cased class name and
    position (``batch_normalization_3``), so a subclass must carry its parent's
    name for the plain model's files to load; ``.keras`` files find the class
    by its registered name (``keras_densenet>{original name}``), which is kept.
    """
    def rename(cls):
        cls.__name__ = cls.__qualname__ = class_name
        return cls
    return rename


@_named_for_weight_files("Conv2D")
@keras.saving.register_keras_serializable(package="keras_densenet")
class KernelConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` that holds its kernel for ``DenseLayerBatchNormalization``, which convolves.

    Same arguments and variables as ``keras.layers.Conv2D`` (no bias, no
    activation), and the class name ``Conv2D`` (see ``_named_for_weight_files``).

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


@_named_for_weight_files("BatchNormalization")
@keras.saving.register_keras_serializable(package="keras_densenet")
class DenseLayerBatchNormalization(keras.layers.BatchNormalization):
    """A whole bottleneck dense layer, recomputed in the backward pass: ``memory_efficient="full"``.

    The layer's second BN (``block{b}_layer{l}_bn2``): same arguments and
    variables as ``keras.layers.BatchNormalization``, class name
    ``BatchNormalization`` (see ``_named_for_weight_files``). It computes

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
            (``BatchNormalization``).
        conv1_kernel: ``(1, 1, sum C_i, F)`` and conv2_kernel: ``(3, 3, F, k)``,
            from ``KernelConv2D`` layers, in the compute dtype.
        concatenation: ``concat(features)``, if the graph has it (see ``recomputed``);
            default: concatenated here (``.keras`` files of keras-densenet 0.2.0).
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
            return self._forward(False, _concatenation(features, concatenation, self.axis),
                                 scale, offset, conv1_kernel, conv2_kernel)[0]
        new, mean, variance = recomputed(self._forward_with_moments, features, concatenation,
                                         self.axis, scale, offset, conv1_kernel, conv2_kernel)
        _update_moving_statistics(self, mean, variance)
        return new

    def _forward_with_moments(self, *args):
        return self._forward(True, *args)

    def _forward(self, batch_moments, x, scale, offset, conv1_kernel, conv2_kernel):
        """``(new maps, mean, variance)`` of the concatenation ``x``: conv1's batch moments,
        or the moving ones."""
        axis = self.axis % 4
        x = _affine_relu(x, scale, offset, axis)
        data_format = "channels_first" if axis == 1 else "channels_last"
        y = ops.conv(ops.cast(x, conv1_kernel.dtype), conv1_kernel, padding="same",
                     data_format=data_format)
        x, mean, variance = _batch_norm_relu(self, y, batch_moments, axis)
        new = ops.conv(ops.cast(x, conv2_kernel.dtype), conv2_kernel, padding="same",
                       data_format=data_format)
        return new, ops.stop_gradient(mean), ops.stop_gradient(variance)

    def compute_output_spec(self, features, scale, offset, conv1_kernel, conv2_kernel,
                            concatenation=None):
        shape = list(features[0].shape)
        shape[self.axis] = conv2_kernel.shape[-1]
        return keras.KerasTensor(tuple(shape), self.compute_dtype)


@_named_for_weight_files("BatchNormalization")
@keras.saving.register_keras_serializable(package="keras_densenet")
class StemBatchNormalization(keras.layers.BatchNormalization):
    """The ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool), recomputed in the backward pass.

    ``stem_bn`` with ``memory_efficient="full"``: same arguments and variables as
    ``keras.layers.BatchNormalization``, class name ``BatchNormalization`` (see
    ``_named_for_weight_files``); ``stem_conv`` is a ``KernelConv2D`` that
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
    saved by keras-densenet 0.2.0, whose ``stem_conv`` is a plain ``Conv2D``.
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
        _update_moving_statistics(self, mean, variance)
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
        x, mean, variance = _batch_norm_relu(self, x, batch_moments, axis)
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


def _batch_norm_relu(batch_norm, x, batch_moments, axis):
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
    return _affine_relu(x, scale, offset, axis), mean, variance


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


def _update_moving_statistics(batch_norm, mean, variance):
    """One moving-average step of ``batch_norm``'s statistics towards the batch's."""
    momentum = batch_norm.momentum
    batch_norm.moving_mean.assign(
        batch_norm.moving_mean * momentum + ops.stop_gradient(mean) * (1.0 - momentum))
    batch_norm.moving_variance.assign(
        batch_norm.moving_variance * momentum + ops.stop_gradient(variance) * (1.0 - momentum))


def _affine_relu(x, scale, offset, axis):
    """``relu(x * scale + offset)`` in ``scale``'s dtype, per channel along ``axis`` (1: channels
    first)."""
    if axis == 1:
        scale, offset = ops.reshape(scale, (-1, 1, 1)), ops.reshape(offset, (-1, 1, 1))
    return ops.relu(ops.cast(x, scale.dtype) * scale + offset)


def weighted_layers(model):
    """``{name: layer}`` of every layer holding weights, nested ones included."""
    return {layer.name: layer for layer in model._flatten_layers(include_self=False)
            if layer.weights and not isinstance(layer, keras.Model)}
