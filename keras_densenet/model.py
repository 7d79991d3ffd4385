"""The ``DenseNet`` builder: one functional-API function for every DenseNet.

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional
Networks" (CVPR 2017). CIFAR-style nets (3 blocks, 3x3 stem) and ImageNet-style
nets (4 blocks, 7x7/2 stem + max pool) differ only in their arguments.
"""

import numbers

import keras
from keras import layers

from keras_densenet import blocks
from keras_densenet import weights as weights_lib
from keras_densenet.architectures import imagenet_architecture_name

DATA_FORMATS = ("channels_last", "channels_first")
POOLINGS = (None, "avg", "max")
ACTIVATIONS = ("softmax", "sigmoid", None)
STEM_PADDINGS = ("symmetric", "same")
STEM_TYPES = ("standard", "deep")
MEMORY_EFFICIENT_MODES = (False, True, "full")
DEFAULT_BN_EPSILON = 1.001e-5


def DenseNet(
    depth=40,
    nb_dense_block=3,
    growth_rate=12,
    nb_filter=-1,
    nb_layers_per_block=-1,
    bottleneck=False,
    reduction=0.0,
    dropout_rate=0.0,
    weight_decay=1e-4,
    subsample_initial_block=False,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    activation="softmax",
    data_format=None,
    bn_epsilon=None,
    stem_padding="symmetric",
    weights_source=None,
    memory_efficient=False,
    stem_type="standard",
    anti_alias=False,
    name=None,
):
    """Build a DenseNet or DenseNet-BC as a functional ``keras.Model``.

    Args:
        depth: total number of conv + dense layers, used when
            ``nb_layers_per_block == -1``: it must be of the form
            ``nb_dense_block * N + nb_dense_block + 1`` (``3N+4`` for 3 blocks),
            with ``N`` even when ``bottleneck`` is on (each layer then holds
            two convs). Default 40.
        nb_dense_block: number of dense blocks (3 for CIFAR, 4 for ImageNet).
        growth_rate: k, channels added by each dense layer. Default 12.
        nb_filter: channels of the stem conv; -1 (default) means ``2 * growth_rate``.
        nb_layers_per_block: -1 to derive from ``depth``; an int for the same
            number in every block; or a list of ``nb_dense_block`` ints.
        bottleneck: add a 1x1 conv to ``4 * growth_rate`` channels before each
            3x3 conv (DenseNet-B).
        reduction: transitions keep ``floor((1 - reduction) * C)`` channels;
            0.0 (default) keeps all of them, 0.5 gives DenseNet-C. In [0, 1).
        dropout_rate: dropout after each 3x3 conv and transition conv. In [0, 1).
        weight_decay: SGD weight decay on conv kernels and BN parameters,
            applied as an L2 regularizer (see ``blocks.BlockSettings``). >= 0.
        subsample_initial_block: ImageNet stem (7x7/2 conv, BN-ReLU, 3x3/2 max
            pool) instead of one 3x3 conv.
        include_top: end with global average pooling and a ``classes``-way
            ``Dense`` named ``predictions``.
        weights: ``None`` (random init), ``"imagenet"``, or the path of a
            weights file (see ``keras_densenet.weights``).
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: ``(H, W, C)`` (or ``(C, H, W)`` for channels_first);
            ``H``/``W`` may be ``None``. Default: ``(None, None, 3)``.
        pooling: without top, ``None`` (4D feature maps), ``"avg"`` or ``"max"``.
        classes: number of classes of the top. Default 10.
        activation: ``"softmax"``, ``"sigmoid"`` or ``None`` (logits) on the top.
        data_format: ``"channels_last"`` or ``"channels_first"``; default
            ``keras.config.image_data_format()``.
        bn_epsilon: BatchNormalization epsilon; default follows the weights
            (1.001e-5 without weights, as keras.applications).
        stem_padding: ``"symmetric"`` (torchvision, keras.applications) or
            ``"same"`` (the original Keras DenseNet release); default follows
            the weights.
        weights_source: with ``weights="imagenet"``, which published weights
            to take (see ``keras_densenet.weights.SOURCES``); default: the
            first source publishing this architecture.
        memory_efficient: ``True``: recompute each dense layer's
            concat-BN-ReLU-conv during back-propagation instead of storing it,
            so that training memory grows linearly with depth
            (``keras_densenet.memory_efficient``); ``"full"``: recompute each
            whole bottleneck dense layer (BN1-ReLU-conv1-BN2-ReLU-conv2), keeping
            only its new maps, and each transition's BN-ReLU-conv: least
            memory, most extra compute. Same layer names
            and weights (weight files and ``.keras`` files load whatever the
            mode), same outputs and gradients. Default False.
        stem_type: with ``subsample_initial_block``, ``"standard"`` (7x7/2 conv)
            or ``"deep"`` (three 3x3 convs, as timm's ``densenet*d``).
        anti_alias: with ``subsample_initial_block``, blur-pool the stem
            (anti-aliased downsampling, timm's ``densenetblur121d``).
        name: model name; default describes the architecture.

    Returns:
        A ``keras.Model`` mapping images to ``(batch, classes)`` with the top,
        or to features: ``(batch, H/32, W/32, C)`` (ImageNet stem, 4 blocks),
        ``(batch, C)`` with pooling.
    """
    data_format = data_format or keras.config.image_data_format()
    _check_choice("data_format", data_format, DATA_FORMATS)
    _check_choice("pooling", pooling, POOLINGS)
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("stem_padding", stem_padding, STEM_PADDINGS)
    _check_choice("stem_type", stem_type, STEM_TYPES)
    if not (isinstance(memory_efficient, bool) or memory_efficient == "full"):  # not 1, not "yes"
        raise ValueError(f"memory_efficient must be one of {MEMORY_EFFICIENT_MODES}; "
                         f"got {memory_efficient!r}.")
    nb_dense_block = _check_positive_int("nb_dense_block", nb_dense_block)
    growth_rate = _check_positive_int("growth_rate", growth_rate)
    classes = _check_positive_int("classes", classes)
    nb_filter = 2 * growth_rate if nb_filter == -1 else _check_positive_int("nb_filter", nb_filter)
    _check_range("reduction", reduction, "[0, 1)", 0.0 <= reduction < 1.0)
    _check_range("dropout_rate", dropout_rate, "[0, 1)", 0.0 <= dropout_rate < 1.0)
    _check_range("weight_decay", weight_decay, ">= 0", weight_decay >= 0.0)
    layers_per_block = resolve_layers_per_block(depth, nb_dense_block, nb_layers_per_block, bottleneck)
    architecture = None if (stem_type != "standard" or anti_alias) else imagenet_architecture_name(
        layers_per_block, growth_rate, nb_filter, bottleneck, reduction, subsample_initial_block
    )

    plan = weights_lib.resolve(
        weights,
        architecture=architecture,
        include_top=include_top,
        classes=classes,
        source=weights_source,
    )
    if plan is not None:
        bn_epsilon = _agree("bn_epsilon", bn_epsilon, plan.bn_epsilon)
        stem_padding = _agree("stem_padding", stem_padding, plan.stem_padding, default="symmetric")
    if bn_epsilon is None:
        bn_epsilon = DEFAULT_BN_EPSILON

    downsamplings = (2 if subsample_initial_block else 0) + nb_dense_block - 1
    img_input = _image_input(
        input_tensor, input_shape, data_format, 2**downsamplings,
        required_channels=plan.channels if plan is not None else None,
    )
    settings = blocks.BlockSettings(
        data_format=data_format,
        bn_epsilon=bn_epsilon,
        weight_decay=weight_decay,
        dropout_rate=dropout_rate,
        memory_efficient=memory_efficient,
    )

    x = blocks.stem(img_input, settings, nb_filter, subsample_initial_block, stem_padding,
                    stem_type, anti_alias)
    channels = nb_filter
    for block_index, nb_layers in enumerate(layers_per_block, start=1):
        channels += nb_layers * growth_rate
        transition = block_index < nb_dense_block
        if transition:
            channels = int(channels * (1.0 - reduction))
        x = blocks.dense_block(x, settings, nb_layers, growth_rate, bottleneck, block_index,
                               transition_filters=channels if transition else None)
    x = settings.bn_relu(x, "final")

    if include_top:
        x = layers.GlobalAveragePooling2D(data_format=data_format, name="avg_pool")(x)
        x = layers.Dense(
            classes,
            activation=activation,
            kernel_regularizer=settings.regularizer(),
            name="predictions",
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(data_format=data_format, name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(data_format=data_format, name="max_pool")(x)

    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    model = keras.Model(inputs, x, name=name or _default_name(
        architecture, layers_per_block, growth_rate, bottleneck, reduction))
    if plan is not None:
        weights_lib.load(model, plan)
    return model


def resolve_layers_per_block(depth, nb_dense_block, nb_layers_per_block, bottleneck):
    """The number of dense layers in each block, as a tuple of ``nb_dense_block`` ints."""
    if isinstance(nb_layers_per_block, (list, tuple)):
        if len(nb_layers_per_block) != nb_dense_block:
            raise ValueError(
                f"nb_layers_per_block has {len(nb_layers_per_block)} entries but "
                f"nb_dense_block is {nb_dense_block}: give one count per dense block."
            )
        return tuple(_check_positive_int("nb_layers_per_block", n) for n in nb_layers_per_block)
    if nb_layers_per_block != -1:
        n = _check_positive_int("nb_layers_per_block", nb_layers_per_block)
        return (n,) * nb_dense_block
    convs_per_layer = 2 if bottleneck else 1
    # depth = stem conv + (nb_dense_block - 1) transitions + classifier + convs in blocks
    other_layers = nb_dense_block + 1
    per_block, remainder = divmod(
        depth - other_layers, nb_dense_block * convs_per_layer
    ) if isinstance(depth, numbers.Integral) else (0, 1)
    if remainder or per_block < 1:
        step = nb_dense_block * convs_per_layer
        raise ValueError(
            f"depth={depth!r} is not valid for nb_dense_block={nb_dense_block}"
            f"{' with bottleneck' if bottleneck else ''}: depth must be {step}*N+{other_layers} "
            f"for a positive integer N (e.g. {step + other_layers}, {2 * step + other_layers}, "
            f"{4 * step + other_layers}), or pass nb_layers_per_block explicitly."
        )
    return (per_block,) * nb_dense_block


def _image_input(input_tensor, input_shape, data_format, min_size, required_channels):
    """The ``keras.Input`` (or the given tensor) after checking its shape."""
    if input_shape is None:
        if input_tensor is not None:
            input_shape = tuple(input_tensor.shape[1:])
        else:
            channels = required_channels or 3
            input_shape = (None, None, channels) if data_format == "channels_last" else (
                channels, None, None)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must have 3 entries, (H, W, C) for channels_last or (C, H, W) "
            f"for channels_first; got {input_shape}."
        )
    if data_format == "channels_last":
        spatial, channels = input_shape[:2], input_shape[2]
    else:
        spatial, channels = input_shape[1:], input_shape[0]
    if channels is None or channels < 1:
        raise ValueError(
            f"input_shape {input_shape} has no channel count for data_format={data_format!r}."
        )
    if required_channels is not None and channels != required_channels:
        raise ValueError(
            f"The requested weights expect {required_channels} input channels but input_shape "
            f"{input_shape} ({data_format}) has {channels}."
        )
    for size in spatial:
        if size is not None and size < min_size:
            raise ValueError(
                f"input_shape {input_shape} is too small: this network halves the image "
                f"{min_size.bit_length() - 1} times, so height and width must be at least "
                f"{min_size}."
            )
    if input_tensor is None:
        return layers.Input(shape=input_shape, name="image")
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape, name="image")
    return input_tensor


def _default_name(architecture, layers_per_block, growth_rate, bottleneck, reduction):
    """``densenet121`` for a published net, else e.g. ``densenet_bc_16-16-16_k12``."""
    if architecture:
        return architecture
    variant = ("b" if bottleneck else "") + ("c" if reduction else "")
    kind = f"densenet_{variant}" if variant else "densenet"
    return f"{kind}_{'-'.join(map(str, layers_per_block))}_k{growth_rate}"


def _agree(argument, given, required, default=None):
    """The weights' requirement for ``argument`` unless the caller asked otherwise."""
    if required is None:
        return given
    if given is not None and given != default and given != required:
        raise ValueError(
            f"{argument}={given!r} conflicts with the requested weights, which need "
            f"{argument}={required!r}; leave {argument} unset."
        )
    return required


def _check_choice(argument, value, allowed):
    if value not in allowed:
        raise ValueError(f"{argument} must be one of {allowed}; got {value!r}.")


def _check_positive_int(argument, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument} must be a positive integer; got {value!r}.")
    return int(value)


def _check_range(argument, value, allowed, ok):
    if not ok:
        raise ValueError(f"{argument} must be in {allowed}; got {value!r}.")
