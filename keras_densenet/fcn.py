"""Fully convolutional DenseNets for semantic segmentation (FC-DenseNet, "Tiramisu").

Jegou, Drozdzal, Vazquez, Romero, Bengio, "The One Hundred Layers Tiramisu:
Fully Convolutional DenseNets for Semantic Segmentation" (CVPRW 2017).

Down path: a 3x3 conv, then ``nb_dense_block`` dense blocks (BN-ReLU-3x3 conv,
dropout), each followed by a transition down (BN-ReLU-1x1 conv, dropout, 2x2
max pool); the block outputs are kept as skip connections. A bottleneck dense
block follows. Up path: a transition up (``upsampling_type``) of only the new
feature maps of the previous block, concatenated with the skip connection,
then a dense block. A 1x1 conv and a per-pixel softmax give ``(H, W, classes)``.

Layer names: ``stem_conv``; ``down{i}_layer{l}_*`` and ``down{i}_transition_*``;
``bottleneck_layer{l}_*``; ``up{i}_transition_*`` and ``up{i}_layer{l}_*``;
``segmentation_conv``, ``segmentation``.
"""

import keras
from keras import layers

from keras_densenet import blocks
from keras_densenet.checks import (check_activation, check_choice, check_data_format,
                                   check_fraction, check_number, check_positive_int, image_shape)
from keras_densenet.layers import PixelShuffle

UPSAMPLING_TYPES = ("deconv", "upsampling", "subpixel")


def DenseNetFCN(input_shape, nb_dense_block=5, growth_rate=16, nb_layers_per_block=4,
                reduction=0.0, dropout_rate=0.2, weight_decay=1e-4, init_conv_filters=48,
                include_top=True, classes=None, activation="softmax", upsampling_type="deconv",
                data_format=None, bn_epsilon=1.001e-5, name="fc_densenet"):
    """Build an FC-DenseNet.

    Args:
        input_shape: ``(H, W, C)`` (or ``(C, H, W)``); H and W divisible by
            ``2 ** nb_dense_block`` (or ``None``).
        nb_dense_block: dense blocks on the down path (and on the up path).
        growth_rate: k. Default 16.
        nb_layers_per_block: an int for every block; a list of
            ``nb_dense_block + 1`` (down blocks and the bottleneck, mirrored on
            the up path); or a list of ``2 * nb_dense_block + 1`` (all blocks).
        reduction: transitions down keep ``(1 - reduction)`` of the channels. In [0, 1).
        dropout_rate: after each conv of the dense layers and transitions down.
        weight_decay: as in ``DenseNet``.
        init_conv_filters: channels of the first 3x3 conv. Default 48.
        include_top: end with the 1x1 conv to ``classes`` and the activation;
            without it the model outputs the last up block's feature maps.
        classes: classes per pixel; required with ``include_top`` (at least 2
            with softmax: one softmax class is the constant 1).
        activation: per pixel: ``"softmax"`` (over the classes), ``None``
            (logits) or any Keras activation name (e.g. ``"sigmoid"``).
        upsampling_type: ``"deconv"`` (3x3/2 transposed conv), ``"upsampling"``
            (nearest-neighbour x2 then 3x3 conv) or ``"subpixel"`` (3x3 conv to 4x
            channels then pixel shuffle).
        data_format: default ``keras.config.image_data_format()``.
        bn_epsilon: BatchNormalization epsilon.
        name: model name.

    Returns:
        A ``keras.Model``: ``(batch, H, W, C)`` -> ``(batch, H, W, classes)``.
    """
    data_format = check_data_format(data_format or keras.config.image_data_format())
    check_choice("upsampling_type", upsampling_type, UPSAMPLING_TYPES)
    activation = check_activation("activation", activation)
    nb_dense_block = check_positive_int("nb_dense_block", nb_dense_block)
    growth_rate = check_positive_int("growth_rate", growth_rate)
    init_conv_filters = check_positive_int("init_conv_filters", init_conv_filters)
    reduction = check_fraction("reduction", reduction)
    dropout_rate = check_fraction("dropout_rate", dropout_rate)
    weight_decay = check_number("weight_decay", weight_decay, ">= 0", lambda v: v >= 0)
    bn_epsilon = check_number("bn_epsilon", bn_epsilon, "(0, 1)", lambda v: 0 < v < 1)
    if include_top:
        if classes is None:
            raise ValueError("classes is required with include_top=True: the number of "
                             "classes per pixel.")
        classes = check_positive_int("classes", classes)
        if classes == 1 and activation == "softmax":
            raise ValueError("classes=1 with activation='softmax' outputs the constant 1: "
                             "use classes=2, or activation='sigmoid' for one binary class.")
    counts = _layers_per_block(nb_layers_per_block, nb_dense_block)
    _check_input_shape(input_shape, data_format, 2**nb_dense_block)

    settings = blocks.BlockSettings(data_format=data_format, bn_epsilon=bn_epsilon,
                                    weight_decay=weight_decay, dropout_rate=dropout_rate)
    inputs = layers.Input(shape=tuple(input_shape), name="image")
    x = settings.conv(init_conv_filters, 3, "stem_conv")(inputs)
    skips = []
    for index in range(1, nb_dense_block + 1):
        x = blocks.dense_block(x, settings, counts[index - 1], growth_rate, False, f"down{index}")
        skips.append(x)
        x = blocks.transition_block(x, settings, int(x.shape[settings.channel_axis] * (1 - reduction)),
                                    f"down{index}_transition", pooling="max")
    _, new = blocks.dense_block(x, settings, counts[nb_dense_block], growth_rate, False,
                                "bottleneck", return_new_maps=True)
    for index in range(1, nb_dense_block + 1):
        prefix = f"up{index}"
        x = _transition_up(new, settings, new.shape[settings.channel_axis], upsampling_type,
                           f"{prefix}_transition")
        x = layers.Concatenate(axis=settings.channel_axis, name=f"{prefix}_skip_concat")(
            [x, skips[-index]])
        x, new = blocks.dense_block(x, settings, counts[nb_dense_block + index], growth_rate,
                                    False, prefix, return_new_maps=True)
    if include_top:
        x = layers.Conv2D(classes, 1, kernel_initializer="he_normal",
                          kernel_regularizer=settings.regularizer(), data_format=data_format,
                          name="segmentation_conv")(x)
        if activation == "softmax":
            x = layers.Softmax(axis=settings.channel_axis, name="segmentation")(x)
        elif activation is not None:
            x = layers.Activation(activation, name="segmentation")(x)
    return keras.Model(inputs, x, name=name)


def FCDenseNet56(input_shape, classes, **kwargs):
    """FC-DenseNet56: 4 layers per block, k=12 (the paper's 1.5M parameters)."""
    return DenseNetFCN(input_shape, growth_rate=12, nb_layers_per_block=4, classes=classes,
                       name=kwargs.pop("name", "fc_densenet56"), **kwargs)


def FCDenseNet67(input_shape, classes, **kwargs):
    """FC-DenseNet67: 5 layers per block, k=16 (the paper's 3.5M parameters)."""
    return DenseNetFCN(input_shape, growth_rate=16, nb_layers_per_block=5, classes=classes,
                       name=kwargs.pop("name", "fc_densenet67"), **kwargs)


def FCDenseNet103(input_shape, classes, **kwargs):
    """FC-DenseNet103: 4-5-7-10-12-15-12-10-7-5-4 layers, k=16 (the paper's 9.4M parameters)."""
    return DenseNetFCN(input_shape, growth_rate=16, nb_layers_per_block=[4, 5, 7, 10, 12, 15],
                       classes=classes, name=kwargs.pop("name", "fc_densenet103"), **kwargs)


def _layers_per_block(nb_layers_per_block, nb_dense_block):
    """Layers of all ``2 * nb_dense_block + 1`` blocks: down, bottleneck, up."""
    total = 2 * nb_dense_block + 1
    if isinstance(nb_layers_per_block, (list, tuple)):
        counts = [check_positive_int("nb_layers_per_block", n) for n in nb_layers_per_block]
        if len(counts) == nb_dense_block + 1:
            return counts + counts[-2::-1]
        if len(counts) == total:
            return counts
        raise ValueError(
            f"nb_layers_per_block has {len(counts)} entries; with nb_dense_block="
            f"{nb_dense_block} give {nb_dense_block + 1} (down blocks and bottleneck, mirrored "
            f"on the up path) or {total} (every block).")
    return [check_positive_int("nb_layers_per_block", nb_layers_per_block)] * total


def _check_input_shape(input_shape, data_format, divisor):
    spatial, _ = image_shape(input_shape, data_format)
    for size in spatial:
        if size is not None and size % divisor:
            raise ValueError(
                f"input_shape {tuple(input_shape)}: height and width must be divisible by "
                f"2**nb_dense_block = {divisor} so that the up path meets the skip "
                f"connections; got {size}. Pad or crop the images (e.g. to "
                f"{(size // divisor + 1) * divisor}).")


def _transition_up(x, settings, filters, upsampling_type, name):
    fmt = settings.data_format
    if upsampling_type == "deconv":
        return layers.Conv2DTranspose(
            filters, 3, strides=2, padding="same", kernel_initializer="he_normal",
            kernel_regularizer=settings.regularizer(), data_format=fmt, name=f"{name}_deconv")(x)
    if upsampling_type == "upsampling":
        x = layers.UpSampling2D(2, data_format=fmt, name=f"{name}_upsample")(x)
        return layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal",
                             kernel_regularizer=settings.regularizer(), data_format=fmt,
                             name=f"{name}_conv")(x)
    x = layers.Conv2D(4 * filters, 3, padding="same", kernel_initializer="he_normal",
                      kernel_regularizer=settings.regularizer(), data_format=fmt,
                      name=f"{name}_conv")(x)
    return PixelShuffle(2, data_format=fmt, name=f"{name}_pixel_shuffle")(x)
