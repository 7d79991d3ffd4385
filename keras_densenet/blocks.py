"""The building blocks of a DenseNet: stem, dense layer, dense block, transition.

Every block is a function ``block(x, settings, ...) -> tensor`` that adds
named Keras layers to a functional graph. Layer names are the contract with
weight files, so they are fixed here (docs/reference.md repeats this table):

==========================  =================================================
name                        layer
==========================  =================================================
``stem_pad``                ZeroPadding2D(3) before the 7x7/2 conv (symmetric)
``stem_conv``               first convolution (7x7/2 or 3x3/1)
``stem_bn``, ``stem_relu``  BN-ReLU after a 7x7/2 stem conv
``stem_pool_pad``           ZeroPadding2D(1) before the 3x3/2 max pool
``stem_pool``               3x3/2 max pool (3x3/1 with ``anti_alias``)
``stem_conv{1,2,3}``, ``stem_bn{1,2,3}``  the deep stem's convs and BNs
``stem_blur``               blur pool, stride 2 (``anti_alias``)
``block{b}_layer{l}_bn1``   BN before the 1x1 bottleneck conv (bottleneck only)
``block{b}_layer{l}_conv1`` 1x1 bottleneck conv to ``4 * growth_rate``
``block{b}_layer{l}_bn2``   BN before the 3x3 conv
``block{b}_layer{l}_conv2`` 3x3 conv producing ``growth_rate`` maps
``block{b}_layer{l}_drop``  dropout after conv2 (only if ``dropout_rate > 0``)
``block{b}_layer{l}_concat`` concatenation of the layer input and its output
``block{b}_moments{i}``     ``memory_efficient``: BN moments of the block input and
                            layers 1..i's outputs (``FeatureMoments``, no weights)
``transition{t}_bn``        BN of transition ``t`` (between block t and t+1)
``transition{t}_conv``      1x1 compression conv
``transition{t}_pool``      2x2/2 average pool
``final_bn``, ``final_relu`` BN-ReLU after the last dense block
``avg_pool`` / ``max_pool`` global pooling
``predictions``             the classifier (Dense)
==========================  =================================================

Blocks and layers are numbered from 1. ReLU layers follow their BN's name
(``_bn1`` -> ``_relu1``).
"""

import dataclasses
import functools

import keras
from keras import layers

from keras_densenet.architectures import BOTTLENECK_WIDTH
from keras_densenet.layers import BlurPool2D
from keras_densenet.memory_efficient import (ConcatenationBatchNorm, FeatureMoments, KernelConv2D,
                                             RecomputedConv, RecomputedDenseLayer, RecomputedStem)
from keras_densenet.utils import channel_axis

@keras.saving.register_keras_serializable(package="keras_densenet")
class WeightDecay(keras.regularizers.L2):
    """``keras.regularizers.L2`` (penalty ``l2 * sum(w ** 2)``, gradient ``2 * l2 * w``), leaner.

    Same argument, config, penalty and gradient as its parent. On TensorFlow
    the penalty is one ``L2Loss`` op, whose gradient is one multiplication:
    fewer graph nodes per regularized variable (17 instead of 26) in a traced
    train step, so less tracing time and training memory (docs/memory.md).
    """

    def __call__(self, x):
        if keras.backend.backend() != "tensorflow":
            return super().__call__(x)
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        return tf.nn.l2_loss(x) * tf.cast(2.0 * self.l2, x.dtype)  # l2_loss: sum(x ** 2) / 2


@dataclasses.dataclass(frozen=True)
class BlockSettings:
    """Settings shared by every block of one network.

    Attributes:
        data_format: ``"channels_last"`` or ``"channels_first"``.
        bn_epsilon: BatchNormalization epsilon (1.001e-5 as keras.applications,
            1e-5 as torchvision, 1.1e-5 as the original Keras DenseNet).
        weight_decay: L2 coefficient applied as SGD weight decay: the kernel,
            gamma and beta regularizers (``WeightDecay``) add
            ``weight_decay / 2 * ||w||^2`` so that the gradient is
            ``weight_decay * w`` as in the paper.
        dropout_rate: dropout after each 3x3 conv and each transition conv.
        memory_efficient: ``True``: recompute each dense layer's
            concat-BN-ReLU-conv in the backward pass; ``"full"``: recompute each
            whole bottleneck dense layer, each transition's concat-BN-ReLU-conv
            and the ImageNet stem's BN-ReLU steps and pool (``stem``;
            ``keras_densenet.memory_efficient``).
    """

    data_format: str = "channels_last"
    bn_epsilon: float = 1.001e-5
    weight_decay: float = 0.0
    dropout_rate: float = 0.0
    memory_efficient: bool | str = False  # False, True or "full"

    @property
    def channel_axis(self):
        return channel_axis(self.data_format)

    def regularizer(self):
        if not self.weight_decay:
            return None
        return WeightDecay(self.weight_decay / 2)

    def conv(self, filters, kernel_size, name, strides=1, padding="same",
             layer_class=layers.Conv2D):
        return layer_class(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=self.regularizer(),
            data_format=self.data_format,
            name=name,
        )

    def batch_norm(self, name, layer_class=layers.BatchNormalization):
        return layer_class(
            axis=self.channel_axis,
            epsilon=self.bn_epsilon,
            gamma_regularizer=self.regularizer(),
            beta_regularizer=self.regularizer(),
            name=name,
        )

    def bn_relu(self, x, prefix, suffix=""):
        """``{prefix}_bn{suffix}`` then ``{prefix}_relu{suffix}``."""
        x = self.batch_norm(f"{prefix}_bn{suffix}")(x)
        return layers.ReLU(name=f"{prefix}_relu{suffix}")(x)

    def dropout(self, x, name):
        if not self.dropout_rate:
            return x
        return layers.Dropout(self.dropout_rate, name=name)(x)


def stem(x, settings, filters, subsample, padding="symmetric", stem_type="standard",
         anti_alias=False):
    """The first convolution (and pooling) of the network.

    Args:
        x: image tensor, ``(batch, H, W, C)`` or ``(batch, C, H, W)``.
        settings: ``BlockSettings``.
        filters: output channels of the stem.
        subsample: ``True`` for the ImageNet stem (7x7/2 conv, BN-ReLU,
            3x3/2 max pool: output is H/4 x W/4); ``False`` for the CIFAR
            stem (one 3x3/1 conv, no BN: output is H x W).
        padding: for the ImageNet stem, ``"symmetric"`` (ZeroPadding2D(3) +
            valid conv, ZeroPadding2D(1) + valid pool, as torchvision and
            keras.applications) or ``"same"`` (TensorFlow's asymmetric "same"
            padding, as the original Keras DenseNet release).
        stem_type: ``"standard"`` (one 7x7/2 conv) or ``"deep"`` (timm's
            ``densenet*d``: 3x3/2 conv to ``filters/2``, 3x3 conv to ``filters/2``,
            3x3 conv to ``filters``, each followed by BN-ReLU: ``stem_conv1..3``).
        anti_alias: replace the 3x3/2 max pool by a 3x3/1 max pool and a 3x3
            binomial blur with stride 2 (``stem_blur``), as timm's ``densenetblur121d``.

    With ``settings.memory_efficient == "full"`` the ImageNet stem's last
    BN-ReLU-pool (and blur) is recomputed in the backward pass by ``stem_bn``
    (``stem_bn3`` in the deep stem: ``memory_efficient.RecomputedStem``),
    with the standard stem's conv (``stem_conv`` is then a
    ``memory_efficient.KernelConv2D``); the deep stem's ``stem_bn1``-``stem_conv2``
    and ``stem_bn2``-``stem_conv3`` are ``recomputed_bn_relu_conv``
    (moments ``stem_moments1``, ``stem_moments2``), so only the convs' outputs are
    stored. No ``stem_relu*``, ``stem_pool_pad``, ``stem_pool`` or ``stem_blur``
    layers then, nor ``stem_pad`` in the standard stem.
    """
    if not subsample:
        return settings.conv(filters, 3, "stem_conv")(x)
    fmt = settings.data_format
    recompute = settings.memory_efficient == "full"
    if stem_type == "deep":
        x = layers.ZeroPadding2D(1, data_format=fmt, name="stem_pad")(x)
        x = settings.conv(filters // 2, 3, "stem_conv1", strides=2, padding="valid")(x)
        for index, width in ((1, filters // 2), (2, filters)):
            if recompute:
                statistics = FeatureMoments(settings.channel_axis,
                                            name=f"stem_moments{index}")(x)
                x = recomputed_bn_relu_conv(x, [x], statistics, settings, width, 3,
                                            f"stem_bn{index}", f"stem_conv{index + 1}")
            else:
                x = settings.bn_relu(x, "stem", str(index))
                x = settings.conv(width, 3, f"stem_conv{index + 1}")(x)
        if recompute:
            return settings.batch_norm("stem_bn3", layer_class=functools.partial(
                RecomputedStem, pool_padding=padding, anti_alias=anti_alias))(x)
        x = settings.bn_relu(x, "stem", "3")
    elif recompute:
        kernel = settings.conv(filters, 7, "stem_conv", strides=2, padding=_valid_or_same(padding),
                               layer_class=functools.partial(
                                   KernelConv2D, input_channels=x.shape[settings.channel_axis]))(x)
        return settings.batch_norm("stem_bn", layer_class=functools.partial(
            RecomputedStem, pool_padding=padding, anti_alias=anti_alias))(x, kernel)
    else:
        if padding == "symmetric":
            x = layers.ZeroPadding2D(3, data_format=fmt, name="stem_pad")(x)
        x = settings.conv(filters, 7, "stem_conv", strides=2, padding=_valid_or_same(padding))(x)
        x = settings.bn_relu(x, "stem")
    if padding == "symmetric":
        # After ReLU every value is >= 0, so zero padding equals -inf padding.
        x = layers.ZeroPadding2D(1, data_format=fmt, name="stem_pool_pad")(x)
    pool_padding = _valid_or_same(padding)
    if anti_alias:
        x = layers.MaxPooling2D(3, strides=1, padding=pool_padding, data_format=fmt,
                                name="stem_pool")(x)
        return BlurPool2D(data_format=fmt, name="stem_blur")(x)
    return layers.MaxPooling2D(3, strides=2, padding=pool_padding, data_format=fmt,
                               name="stem_pool")(x)


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
        bn_name, conv_name: the names of the ``ConcatenationBatchNorm`` and ``RecomputedConv``
            layers.

    Returns:
        ``(batch, H, W, filters)``.
    """
    scale, offset = settings.batch_norm(bn_name, layer_class=ConcatenationBatchNorm)([statistics])
    conv = settings.conv(filters, kernel_size, conv_name, layer_class=RecomputedConv)
    return conv(features, scale, offset, concatenation=concatenation)


def recomputed_dense_layer(concatenation, features, statistics, settings, growth_rate,
                           bottleneck_width, prefix):
    """A whole bottleneck dense layer (BN1-ReLU-conv1-BN2-ReLU-conv2), recomputed in backprop.

    Args:
        concatenation, features, statistics, settings: as ``recomputed_bn_relu_conv``.
        growth_rate: output channels (k).
        bottleneck_width: conv1 produces ``bottleneck_width * growth_rate`` channels.
        prefix: ``block{b}_layer{l}``: the layers ``_bn1``, ``_conv1``, ``_conv2``
            (``KernelConv2D``) and ``_bn2`` (``RecomputedDenseLayer``, which computes).

    Returns:
        ``(batch, H, W, growth_rate)``.
    """
    scale, offset = settings.batch_norm(
        f"{prefix}_bn1", layer_class=ConcatenationBatchNorm)([statistics])
    conv1_kernel = settings.conv(bottleneck_width * growth_rate, 1, f"{prefix}_conv1",
                                 layer_class=KernelConv2D)(scale)
    conv2_kernel = settings.conv(growth_rate, 3, f"{prefix}_conv2",
                                 layer_class=KernelConv2D)(conv1_kernel)
    bn2 = settings.batch_norm(f"{prefix}_bn2", layer_class=RecomputedDenseLayer)
    return bn2(features, scale, offset, conv1_kernel, conv2_kernel, concatenation=concatenation)


def _valid_or_same(stem_padding):
    return "valid" if stem_padding == "symmetric" else "same"


def dense_layer(x, settings, growth_rate, bottleneck, name):
    """One composite layer H_l: [BN-ReLU-1x1 conv]-BN-ReLU-3x3 conv, concatenated.

    Args:
        x: ``(batch, H, W, C)`` feature maps (channels first: ``(batch, C, H, W)``).
        settings: ``BlockSettings``.
        growth_rate: channels added by this layer (k).
        bottleneck: add the 1x1 conv to ``4 * k`` channels (DenseNet-B).
        name: layer prefix, ``block{b}_layer{l}``.

    Returns:
        ``(batch, H, W, C + k)``: the input concatenated with the new maps.
    """
    y = new_feature_maps(x, settings, growth_rate, bottleneck, name)
    return layers.Concatenate(axis=settings.channel_axis, name=f"{name}_concat")([x, y])


def new_feature_maps(x, settings, growth_rate, bottleneck, name):
    """The ``(batch, H, W, growth_rate)`` maps a dense layer adds (before concatenation)."""
    y = x
    if bottleneck:
        y = settings.bn_relu(y, name, "1")
        y = settings.conv(BOTTLENECK_WIDTH * growth_rate, 1, f"{name}_conv1")(y)
    y = settings.bn_relu(y, name, "2")
    y = settings.conv(growth_rate, 3, f"{name}_conv2")(y)
    return settings.dropout(y, f"{name}_drop")


def dense_block(x, settings, nb_layers, growth_rate, bottleneck, name, return_new_maps=False):
    """``nb_layers`` dense layers named ``{name}_layer{1..n}`` (``name``: ``block{b}``).

    Returns ``(batch, H, W, C + nb_layers * growth_rate)``; with
    ``return_new_maps`` (plain layout only, as FC-DenseNet's up path needs) also
    the ``nb_layers * growth_rate`` new maps alone, concatenated as ``{name}_new_maps``.
    """
    if settings.memory_efficient:
        if return_new_maps:
            raise ValueError("return_new_maps needs memory_efficient=False.")
        return _memory_efficient_dense_layers(x, settings, nb_layers, growth_rate, bottleneck,
                                              name)[1]
    new = []
    for layer_index in range(1, nb_layers + 1):
        prefix = f"{name}_layer{layer_index}"
        new.append(new_feature_maps(x, settings, growth_rate, bottleneck, prefix))
        x = layers.Concatenate(axis=settings.channel_axis, name=f"{prefix}_concat")([x, new[-1]])
    if not return_new_maps:
        return x
    if len(new) == 1:
        return x, new[0]
    return x, layers.Concatenate(axis=settings.channel_axis, name=f"{name}_new_maps")(new)


def recomputed_block_and_transition(x, settings, nb_layers, growth_rate, bottleneck,
                                    block_index, filters):
    """``memory_efficient="full"``: block ``block{b}`` then transition ``transition{b}``
    to ``filters`` channels, recomputed from the block's feature list, so the
    block's concatenation is never stored.

    Same weighted layers as ``dense_block`` + ``transition_block``. Returns
    ``(batch, H // 2, W // 2, filters)``.
    """
    features, concatenation, statistics = _memory_efficient_dense_layers(
        x, settings, nb_layers, growth_rate, bottleneck, f"block{block_index}")
    statistics = FeatureMoments(
        settings.channel_axis, name=f"block{block_index}_moments{len(features) - 1}",
    )(features[-1], statistics)
    name = f"transition{block_index}"
    x = recomputed_bn_relu_conv(concatenation, features, statistics, settings, filters, 1,
                                f"{name}_bn", f"{name}_conv")
    return _pool(settings.dropout(x, f"{name}_drop"), settings, name, "avg")


def _memory_efficient_dense_layers(x, settings, nb_layers, growth_rate, bottleneck, name):
    """The dense layers with each concat-BN-ReLU-conv recomputed in the backward pass.

    Same weighted layers and names as the plain block; the first BN-ReLU-conv of
    each layer (``_bn1``/``_conv1``, or ``_bn2``/``_conv2`` without bottleneck)
    reads the list of earlier feature maps, their concatenation (the layer
    before's ``{prefix}_concat``, as in the plain block, but not stored for the
    backward pass: see ``memory_efficient.recompute.recomputed``) and its moments
    (``{name}_moments{i}``: those of the block input and of layers 1..i's
    outputs, concatenated).
    With ``settings.memory_efficient == "full"`` a bottleneck layer's four
    weighted layers recompute all of it (``recomputed_dense_layer``);
    without bottleneck the layer is one BN-ReLU-conv, as with ``True``.

    Returns ``(features, concatenation, statistics)``: the block input and each
    layer's output, their concatenation (``block{b}_layer{n}_concat``) and the
    moments of all but the last map.
    """
    features, concatenation, statistics = [x], x, None
    for layer_index in range(1, nb_layers + 1):
        statistics = FeatureMoments(
            settings.channel_axis, name=f"{name}_moments{layer_index - 1}",
        )(features[-1], statistics)
        prefix = f"{name}_layer{layer_index}"
        if bottleneck and settings.memory_efficient == "full":
            y = recomputed_dense_layer(concatenation, features, statistics, settings, growth_rate,
                                       BOTTLENECK_WIDTH, prefix)
        elif bottleneck:
            y = recomputed_bn_relu_conv(concatenation, features, statistics, settings,
                                        BOTTLENECK_WIDTH * growth_rate, 1, f"{prefix}_bn1",
                                        f"{prefix}_conv1")
            y = settings.bn_relu(y, prefix, "2")
            y = settings.conv(growth_rate, 3, f"{prefix}_conv2")(y)
        else:
            y = recomputed_bn_relu_conv(concatenation, features, statistics, settings,
                                        growth_rate, 3, f"{prefix}_bn2", f"{prefix}_conv2")
        features = [*features, settings.dropout(y, f"{prefix}_drop")]
        concatenation = layers.Concatenate(axis=settings.channel_axis,
                                           name=f"{prefix}_concat")([concatenation, features[-1]])
    return features, concatenation, statistics


def transition_block(x, settings, filters, name, pooling="avg"):
    """BN-ReLU-1x1 conv to ``filters`` channels, dropout, then 2x2/2 pooling.

    Layers ``{name}_bn``, ``_relu``, ``_conv``, ``_drop``, ``_pool`` (``name``:
    ``transition{t}``); ``pooling`` is ``"avg"`` (DenseNet) or ``"max"``
    (FC-DenseNet's transition down). Returns ``(batch, H // 2, W // 2, filters)``.
    """
    x = settings.bn_relu(x, name)
    x = settings.conv(filters, 1, f"{name}_conv")(x)
    return _pool(settings.dropout(x, f"{name}_drop"), settings, name, pooling)


def _pool(x, settings, name, pooling):
    pool = layers.AveragePooling2D if pooling == "avg" else layers.MaxPooling2D
    return pool(2, strides=2, data_format=settings.data_format, name=f"{name}_pool")(x)
