"""``DenseNet``: one function for every DenseNet, from the original Keras DenseNet's arguments.

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional
Networks" (CVPR 2017). CIFAR-style nets (3 blocks, 3x3 stem) and ImageNet-style
nets (4 blocks, 7x7/2 stem + max pool) differ only in their arguments.

``DenseNet(...)`` reads top to bottom in four steps: ``Architecture.from_arguments``
checks every argument, ``weights.resolve`` plans the weights (BN epsilon,
stem padding, input channels they need; nothing is downloaded yet),
``model.build`` adds the layers, and ``weights.load`` fills them. The model it
returns is a ``model.DenseNetModel``.
"""

import dataclasses

from keras_densenet import weights as weights_lib
from keras_densenet.architectures import DEFAULT_BN_EPSILON, DEFAULT_EVAL
from keras_densenet.arguments import Architecture
from keras_densenet.model import build


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
    stem_padding=None,
    weights_source=None,
    memory_efficient=False,
    stem_type="standard",
    anti_alias=False,
    name=None,
):
    """Build a DenseNet or DenseNet-BC as a functional ``keras.Model`` (a ``DenseNetModel``).

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
            3x3 conv (DenseNet-B). A bool.
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
        activation: the top's activation: ``None`` (logits) or any Keras
            activation name (``"softmax"``, default; ``"sigmoid"``, ``"linear"``...).
        data_format: ``"channels_last"`` or ``"channels_first"``; default
            ``keras.config.image_data_format()``.
        bn_epsilon: BatchNormalization epsilon in (0, 1); default follows the
            weights (1.001e-5 without weights, as keras.applications).
        stem_padding: ``"symmetric"`` (torchvision, keras.applications) or
            ``"same"`` (the original Keras DenseNet release); default follows
            the weights (``"symmetric"`` without weights).
        weights_source: with ``weights="imagenet"``, which published weights
            to take (see ``keras_densenet.weights.SOURCES``); default: the
            first source publishing this architecture.
        memory_efficient: ``True``: recompute each dense layer's
            concat-BN-ReLU-conv during back-propagation instead of storing it,
            so that training memory grows linearly with depth
            (``keras_densenet.memory_efficient``); ``"full"``: recompute each
            whole bottleneck dense layer (BN1-ReLU-conv1-BN2-ReLU-conv2), keeping
            only its new maps, each transition's BN-ReLU-conv and the ImageNet
            stem's BN-ReLU steps and pool: least memory, most extra compute.
            Same layer names and weights (weight files and ``.keras`` files
            load whatever the mode), same outputs and gradients. Default False.
        stem_type: with ``subsample_initial_block``, ``"standard"`` (7x7/2 conv)
            or ``"deep"`` (three 3x3 convs, as timm's ``densenet*d``).
        anti_alias: with ``subsample_initial_block``, blur-pool the stem
            (anti-aliased downsampling, timm's ``densenetblur121d``).
        name: model name; default describes the architecture.

    ``input_shape`` may have any number of channels: with weights, the first
    convolution's kernel is adapted from the weights' channels (``weights.assignment``).

    Returns:
        A ``DenseNetModel`` mapping images to ``(batch, classes)`` with the top,
        or to features: ``(batch, H/32, W/32, C)`` (ImageNet stem, 4 blocks),
        ``(batch, C)`` with pooling. Its ``densenet_config`` records the
        architecture, data format, preprocessing, weights source and pyramid levels.
    """
    arguments = {key: value for key, value in locals().items()
                 if key not in ("weights", "weights_source", "name")}
    architecture = Architecture.from_arguments(**arguments)
    plan = weights_lib.resolve(weights, architecture=architecture.published_name,
                               include_top=architecture.include_top,
                               classes=architecture.classes, source=weights_source)
    architecture = _with_weights_requirements(architecture, plan)
    model = build(architecture, input_tensor=input_tensor, name=name,
                  default_channels=(plan.channels if plan else None) or 3, **weights_facts(plan))
    if plan is not None:
        weights_lib.load(model, plan)
    return model


def _with_weights_requirements(architecture, plan):
    """``architecture`` with the BN epsilon and stem padding the weights need."""
    bn_epsilon, stem_padding = architecture.bn_epsilon, architecture.stem_padding
    if plan is not None:
        bn_epsilon = _agree("bn_epsilon", bn_epsilon, plan.bn_epsilon)
        stem_padding = _agree("stem_padding", stem_padding, plan.stem_padding)
    return dataclasses.replace(
        architecture,
        bn_epsilon=DEFAULT_BN_EPSILON if bn_epsilon is None else bn_epsilon,
        stem_padding=stem_padding or "symmetric")


def _agree(argument, given, required):
    """The weights' requirement for ``argument`` unless the caller asked for another value."""
    if required is None:
        return given
    if given is not None and given != required:
        raise ValueError(
            f"{argument}={given!r} conflicts with the requested weights, which need "
            f"{argument}={required!r}; leave {argument} unset.")
    return required


def weights_facts(plan):
    """What ``plan``'s weights say for the model's config: preprocessing, source, eval transform."""
    if plan is None:
        return {}
    if not plan.entry:
        return {"preprocessing": plan.preprocessing, "weights_source": "file"}
    source = weights_lib.sources()[plan.entry["source"]]
    return {"preprocessing": plan.preprocessing, "weights_source": plan.entry["source"],
            **{key: source.get(key, DEFAULT_EVAL[key]) for key in DEFAULT_EVAL}}
