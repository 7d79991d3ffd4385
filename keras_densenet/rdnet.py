"""RDNet ("DenseNets Reloaded", Kim et al., ECCV 2024) in Keras 3, as timm builds it.

An RDNet is a patchify stem (4x4/4 conv + LayerNorm) followed by dense stages:
each stage but the first opens with a transition (LayerNorm + a 2x2/2 conv
where the stage downsamples, else 1x1, to ``int(C * compression / 8) * 8``
channels), then concatenates ``num_blocks`` new feature maps of ``growth_rate``
channels onto its input. A block is a 7x7 depthwise conv, LayerNorm, 1x1 conv
to ``int(C_in * bottleneck_width_ratio / 8) * 8`` channels, exact GELU, 1x1
conv to ``growth_rate``, in the later stages an effective squeeze-excitation
(global mean, 1x1 conv, hard sigmoid gate), layer scale and drop path. The
head pools globally, LayerNorms the pooled vector and classifies (timm's
``NormMlpClassifierHead``). Every LayerNorm normalizes over channels alone with
epsilon 1e-6 (timm's ``LayerNorm2d``).

Layer names follow timm's module paths, so that ``keras_densenet.weights.rdnet_timm``
maps a timm state dict onto them: ``stem_conv``, ``stem_norm``,
``stage{i}_transition_norm`` / ``_conv``, ``stage{i}_block{j}_dwconv`` /
``_norm`` / ``_conv1`` / ``_conv2`` / ``_se_conv`` / ``_layer_scale``,
``head_norm``, ``predictions``.

``memory_efficient=True`` recomputes each block in the backward pass
(``RecomputedSequence``), ``"full"`` also each transition and the stem; the
weighted layers are then ``*Weights`` layers (``memory_efficient.weights_layer``)
with the same names, class names and variables.
"""

import math

import keras
from keras import layers, ops

from keras_densenet.architectures import RDNET_VARIANTS
from keras_densenet.arguments import MEMORY_EFFICIENT_MODES
from keras_densenet.checks import (check_activation, check_bool, check_choice,
                                   check_data_format, check_fraction, check_positive_int)
from keras_densenet.config import DEFAULTS
from keras_densenet.memory_efficient import recomputed, weights_layer
from keras_densenet.memory_efficient.recompute import concatenation_or_concat
from keras_densenet.model import DenseNetModel, image_input
from keras_densenet.preprocessing import normalization
from keras_densenet.utils import channel_axis, check_input_path
from keras_densenet.weights import registry
from keras_densenet.weights.rdnet_timm import load_rdnet_weights

MIN_SIZE = 32
"""Smallest input height/width: the stem and three transitions divide it by 32."""


@keras.saving.register_keras_serializable(package="keras_densenet")
def gelu_erf(x):
    """Exact GELU (not the tanh approximation): ``x * (1 + erf(x / sqrt(2))) / 2``.

    Written with ``erf``, which ONNX has: TensorFlow's own exact GELU lowers to
    ``erfc``, which ONNX has not (tf2onnx writes an invalid ``Erfc`` node). Its
    gradient, ``Phi(x) + x * phi(x)``, is written out so that only ``x`` is kept
    for the backward pass, as PyTorch's GELU keeps it: TensorFlow's derivative of
    the formula keeps ``x / sqrt(2)``, ``x / 2`` and ``1 + erf(...)`` as well, three
    more tensors as wide as a block's bottleneck (4x its input), 0.8 GB of
    RDNet-Tiny's training step at batch 8, 224 px (docs/rdnet.md).
    """
    return _gelu_erf(x)


@ops.custom_gradient
def _gelu_erf(x):
    def gradient(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream  # PyTorch passes it by name
        cdf = 0.5 * (1.0 + ops.erf(x / math.sqrt(2.0)))
        return upstream * (cdf + x * ops.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))
    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0))), gradient


@keras.saving.register_keras_serializable(package="keras_densenet")
class LayerScale(layers.Layer):
    """A learned per-channel factor (timm's layer scale ``gamma``): ``x * gamma``.

    Any 4D shape in, the same shape out; ``gamma`` has one entry per channel
    (axis -1, or 1 with ``data_format="channels_first"``), initialized to
    ``init_value`` (default 1e-6).
    """

    def __init__(self, init_value=1e-6, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.init_value, self.data_format = init_value, data_format

    def build(self, input_shape):
        self.gamma = self.add_weight(
            shape=(input_shape[channel_axis(self.data_format)],), name="gamma",
            initializer=keras.initializers.Constant(self.init_value))

    def call(self, x):
        gamma = self.gamma if self.data_format == "channels_last" else ops.reshape(
            self.gamma, (-1, 1, 1))
        return x * ops.cast(gamma, x.dtype)

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value,
                "data_format": self.data_format}


DepthwiseConv2DWeights = weights_layer(layers.DepthwiseConv2D, "DepthwiseConv2DWeights")
LayerNormalizationWeights = weights_layer(layers.LayerNormalization, "LayerNormalizationWeights")
Conv2DWeights = weights_layer(layers.Conv2D, "Conv2DWeights")
LayerScaleWeights = weights_layer(LayerScale, "LayerScaleWeights")
"""The weighted layers of the memory-efficient modes (``memory_efficient.weights_layer``)."""


@keras.saving.register_keras_serializable(package="keras_densenet")
class RecomputedSequence(layers.Layer):
    """A chain of RDNet's operations, recomputed in the backward pass (``memory_efficient``).

    No weights of its own: it computes with those of ``*Weights`` layers, which
    hold the plain layers' variables under their names. In training only its
    input maps and its output are kept for the backward pass
    (``memory_efficient.recomputed``), not what the steps compute in between.

    Args:
        steps: names of the operations, in order, each taking its weights from
            ``weights`` in turn: ``"depthwise_conv"`` (7x7 "same", bias),
            ``"layer_norm"`` (over channels, ``epsilon``: ``channel_layer_norm``),
            ``"conv"`` ("valid", stride = kernel size: the patchify stem, the
            transitions, 1x1 convs; bias), ``"gelu"`` (``gelu_erf``), ``"ese"``
            (effective squeeze-excitation: mean, 1x1 conv, hard sigmoid, product)
            and ``"layer_scale"``.
        epsilon: the LayerNorms' epsilon.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Call arguments:
        features: list of ``(batch, H, W, C_i)`` maps (or channels first) whose
            concatenation the steps start from.
        weights: the steps' weight tensors, flat, in order.
        concatenation: ``concat(features)``, as the graph has it (see ``recomputed``).
        training: recompute in the backward pass (inference stores nothing anyway).
    """

    WEIGHTS = {"depthwise_conv": 2, "layer_norm": 2, "conv": 2, "gelu": 0, "ese": 2,
               "layer_scale": 1}
    """How many weight tensors each step takes."""

    def __init__(self, steps, epsilon=1e-6, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        unknown = [step for step in steps if step not in self.WEIGHTS]
        if unknown:
            raise ValueError(f"steps must be among {tuple(self.WEIGHTS)}; got {unknown}.")
        self.steps, self.epsilon, self.data_format = list(steps), epsilon, data_format
        self._convert_input_args = False

    @property
    def _axis(self):
        return channel_axis(self.data_format)

    def call(self, features, weights, concatenation=None, training=None):
        if training:
            return recomputed(self._forward, features, concatenation, self._axis, *weights)
        return self._forward(concatenation_or_concat(features, concatenation, self._axis),
                             *weights)

    def _forward(self, x, *weights):
        weights = list(weights)
        for step in self.steps:
            taken, weights = weights[:self.WEIGHTS[step]], weights[self.WEIGHTS[step]:]
            x = getattr(self, f"_{step}")(x, *taken)
        return x

    def _with_bias(self, x, bias):
        return x + (bias if self.data_format == "channels_last" else ops.reshape(bias, (-1, 1, 1)))

    def _depthwise_conv(self, x, kernel, bias):
        return self._with_bias(ops.depthwise_conv(x, kernel, padding="same",
                                                  data_format=self.data_format), bias)

    def _conv(self, x, kernel, bias):
        return self._with_bias(ops.conv(x, kernel, strides=kernel.shape[0], padding="valid",
                                        data_format=self.data_format), bias)

    def _layer_norm(self, x, gamma, beta):
        if self.data_format == "channels_last":
            return ops.layer_normalization(x, gamma, beta, -1, self.epsilon)
        x = ops.layer_normalization(ops.transpose(x, (0, 2, 3, 1)), gamma, beta, -1,
                                    self.epsilon)
        return ops.transpose(x, (0, 3, 1, 2))

    def _gelu(self, x):
        return gelu_erf(x)

    def _ese(self, x, kernel, bias):
        spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
        gate = self._conv(ops.mean(x, axis=spatial, keepdims=True), kernel, bias)
        return x * keras.activations.hard_sigmoid(gate)

    def _layer_scale(self, x, gamma):
        return x * (gamma if self.data_format == "channels_last" else ops.reshape(gamma, (-1, 1, 1)))

    def get_config(self):
        return {**super().get_config(), "steps": self.steps, "epsilon": self.epsilon,
                "data_format": self.data_format}


def RDNet(variant, include_top=True, weights=None, input_tensor=None, input_shape=None,
          pooling=None, classes=1000, classifier_activation=None, data_format=None,
          drop_path_rate=0.0, weights_source=None, memory_efficient=False, name=None):
    """An RDNet named in ``RDNET_VARIANTS`` (``"rdnet_tiny"`` ... ``"rdnet_large"``).

    Args:
        variant: a key of ``RDNET_VARIANTS``.
        include_top: end with global average pooling, the head LayerNorm and a
            ``classes``-way ``Dense`` named ``predictions``.
        weights: ``None`` (random initialization), ``"imagenet"`` (the published
            file of ``weights/manifest.json``: downloaded, and loaded once its hash
            is known), the path of a timm RDNet state dict (``.safetensors``,
            ``.pth``, ``pytorch_model.bin``) or of a ``.weights.h5`` that
            ``keras-densenet port`` wrote.
        input_tensor: an optional image tensor to build on.
        input_shape: ``(H, W, C)`` (``(C, H, W)`` channels first); default
            ``(None, None, 3)``: any size of at least ``MIN_SIZE``.
        pooling: without the top, ``None`` returns the last stage's feature map
            ``(batch, H/32, W/32, C)``; ``"avg"`` / ``"max"`` pool it and apply
            the head LayerNorm, giving ``(batch, C)`` as timm's headless model.
        classes: outputs of the top.
        classifier_activation: activation of the top (default ``None``: logits, as timm).
        data_format: ``"channels_last"`` or ``"channels_first"``; default
            ``keras.config.image_data_format()``.
        drop_path_rate: stochastic depth of the last block; block ``b`` of the
            ``n`` (counted over all stages) drops its new features per sample
            with probability ``drop_path_rate * b / (n - 1)`` in training.
        weights_source: with ``weights="imagenet"``, ``"timm_rdnet"`` (default:
            ``nv_in1k``, 224 px) or ``"timm_rdnet_384"`` (RDNet-Large at 384 px).
        memory_efficient: ``False`` (default); ``True``: recompute each block
            (depthwise conv to layer scale) in the backward pass, keeping only
            its input maps and new maps; ``"full"``: also each transition
            (LayerNorm and conv) and the stem. Same layer names, variables,
            outputs and gradients (docs/rdnet.md measures the memory).
        name: the model's name (default ``variant``).

    Returns:
        A ``model.DenseNetModel`` (a functional ``keras.Model``) whose config records
        ``published_name`` (the variant), ``memory_efficient``, the pyramid (``pyramid_layers``), the
        last stage's output as ``cam_layer`` and timm's eval transform (crop 0.9,
        bicubic); ``architecture`` is ``None`` (no DenseNet ``Architecture``).
    """
    check_choice("variant", variant, tuple(RDNET_VARIANTS))
    include_top = check_bool("include_top", include_top)
    data_format = check_data_format(data_format or keras.config.image_data_format())
    check_choice("pooling", pooling, (None, "avg", "max"))
    classes = check_positive_int("classes", classes)
    classifier_activation = check_activation("classifier_activation", classifier_activation)
    drop_path_rate = check_fraction("drop_path_rate", drop_path_rate)
    check_choice("memory_efficient", memory_efficient, MEMORY_EFFICIENT_MODES)
    entry = None
    if weights == "imagenet":
        if include_top and classes != 1000:
            raise ValueError('weights="imagenet" with include_top=True needs classes=1000; '
                             f"got classes={classes}.")
        entry = registry.find_entry(variant, True, weights_source or "timm_rdnet")
    elif weights_source is not None:
        raise ValueError(f'weights_source applies only to weights="imagenet"; got '
                         f"weights={weights!r}.")
    elif weights is not None:
        check_input_path(weights, "weights")
    config = RDNET_VARIANTS[variant]
    inputs = image_input(input_tensor, input_shape, data_format, MIN_SIZE)

    x = rdnet_features(inputs, config, data_format, drop_path_rate, memory_efficient)
    cam_layer = x._keras_history.operation.name
    if include_top or pooling is not None:
        pool = layers.GlobalMaxPooling2D if pooling == "max" else layers.GlobalAveragePooling2D
        x = pool(data_format=data_format, name=f"{pooling or 'avg'}_pool")(x)
        x = layers.LayerNormalization(epsilon=config["norm_eps"], name="head_norm")(x)
    if include_top:
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    if input_tensor is not None:  # the graph's own input, where input_tensor is derived
        sources = keras.utils.get_source_inputs(input_tensor)
        inputs = sources[0] if len(sources) == 1 else sources
    source = entry["source"] if entry else ("file" if weights else None)
    evaluation = registry.sources()[entry["source"] if entry else "timm_rdnet"]
    channels = inputs.shape[channel_axis(data_format)]
    model = DenseNetModel(inputs, x, name=name or variant, densenet_config={
        **DEFAULTS, "architecture": None, "published_name": variant, "data_format": data_format,
        "input_shape": list(inputs.shape[1:]), "class_names": None, "weights_source": source,
        "preprocessing": "torch" if weights else None,
        "input_normalization": normalization("torch", channels) if weights else None,
        "crop_pct": evaluation["crop_pct"], "interpolation": evaluation["interpolation"],
        "pyramid": pyramid_layers(variant), "cam_layer": cam_layer,
        "memory_efficient": memory_efficient})
    if entry is not None:
        weights = registry.download(entry)
    if weights is not None:
        registry.verify_published(weights)
        if registry.detect(weights).name == "keras3":  # ours, e.g. from keras-densenet port
            registry.FORMATS["keras3"].load_into(model, weights)
        else:
            load_rdnet_weights(model, weights)
    return model


def rdnet_features(x, config, data_format="channels_last", drop_path_rate=0.0,
                   memory_efficient=False):
    """The stem and dense stages of ``config`` (an ``RDNET_VARIANTS`` value) on images ``x``.

    ``(batch, H, W, 3)`` -> ``(batch, H/32, W/32, C)`` (floor division per
    stride; channels first ``(batch, C, H/32, W/32)``). Stage ``i`` ends in the
    layer ``stage{i}_block{n-1}_concat`` (see ``pyramid_layers``), in every
    ``memory_efficient`` mode (see ``RDNet``).
    """
    axis = channel_axis(data_format)
    eps = config["norm_eps"]
    patch = config["patch_size"]
    full = memory_efficient == "full"
    stem = [("conv", "stem_conv", dict(filters=config["num_init_features"], kernel_size=patch,
                                       strides=patch)),
            ("layer_norm", "stem_norm", {})]
    x = (_recomputed(x, [x], stem, eps, data_format, "stem", x.shape[axis]) if full
         else _plain(x, stem, eps, data_format))
    channels = config["num_init_features"]
    rates = drop_path_rates(drop_path_rate, config["num_blocks_list"])
    features = [x]
    for i, (blocks, growth_rate) in enumerate(zip(config["num_blocks_list"],
                                                  config["growth_rates"])):
        if i > 0:
            kernel = 2 if config["is_downsample_block"][i] else 1
            transition = [("layer_norm", f"stage{i}_transition_norm", {}),
                          ("conv", f"stage{i}_transition_conv", dict(
                              filters=int(channels * config["transition_compression_ratio"] / 8)
                              * 8, kernel_size=kernel, strides=kernel))]
            x = (_recomputed(x, features, transition, eps, data_format, f"stage{i}_transition",
                             channels) if full else _plain(x, transition, eps, data_format))
            channels = x.shape[axis]
            features = [x]
        ese = config["block_type"][i] == "BlockESE"
        for j in range(blocks):
            name = f"stage{i}_block{j}"
            block = _block_steps(config, channels, growth_rate, ese, name)
            y = (_recomputed(x, features, block, eps, data_format, f"{name}_recomputed",
                             channels) if memory_efficient
                 else _plain(x, block, eps, data_format))
            if rates[i][j] > 0:
                y = layers.Dropout(rates[i][j], noise_shape=(None, 1, 1, 1),
                                   name=f"{name}_drop_path")(y)
            x = layers.Concatenate(axis=axis, name=f"{name}_concat")([x, y])
            features.append(y)
            channels += growth_rate
    return x


def channel_layer_norm(x, epsilon, data_format, name):
    """LayerNorm over the channels of each pixel (timm's ``LayerNorm2d``), layer ``name``.

    Channels first, the map is moved to channels last and back around it, as
    ``LayerNorm2d`` does: Keras' ``LayerNormalization(axis=1)`` normalizes the
    wrong axes on the PyTorch backend (``F.layer_norm`` takes trailing axes).
    """
    if data_format == "channels_last":
        return layers.LayerNormalization(epsilon=epsilon, name=name)(x)
    x = layers.Permute((2, 3, 1), name=f"{name}_channels_last")(x)
    x = layers.LayerNormalization(epsilon=epsilon, name=name)(x)
    return layers.Permute((3, 1, 2), name=f"{name}_channels_first")(x)


def _block_steps(config, channels, growth_rate, ese, name):
    """timm's ``DenseBlock`` (its ``growth_rate`` new maps) as ``(step, layer name, layer
    arguments)`` triples: the steps of ``RecomputedSequence``, read by ``_plain`` and
    ``_recomputed``."""
    inter = int(channels * config["bottleneck_width_ratio"] / 8) * 8
    steps = [("depthwise_conv", f"{name}_dwconv", {}),
             ("layer_norm", f"{name}_norm", {}),
             ("conv", f"{name}_conv1", dict(filters=inter, kernel_size=1, strides=1)),
             ("gelu", f"{name}_gelu", {}),
             ("conv", f"{name}_conv2", dict(filters=growth_rate, kernel_size=1, strides=1))]
    if ese:
        steps.append(("ese", f"{name}_se", dict(filters=growth_rate, kernel_size=1)))
    if config["ls_init_value"] > 0:
        steps.append(("layer_scale", f"{name}_layer_scale",
                      dict(init_value=config["ls_init_value"])))
    return steps


def _plain(x, steps, epsilon, data_format):
    """``steps`` (see ``_block_steps``) as Keras layers on ``x``."""
    conv = dict(padding="valid", kernel_initializer="he_normal", data_format=data_format)
    for step, name, arguments in steps:
        if step == "depthwise_conv":
            x = layers.DepthwiseConv2D(7, padding="same", depthwise_initializer="he_normal",
                                       data_format=data_format, name=name)(x)
        elif step == "layer_norm":
            x = channel_layer_norm(x, epsilon, data_format, name)
        elif step == "conv":
            x = layers.Conv2D(**arguments, name=name, **conv)(x)
        elif step == "gelu":
            x = layers.Activation(gelu_erf, name=name)(x)
        elif step == "ese":
            gate = layers.GlobalAveragePooling2D(data_format=data_format, keepdims=True,
                                                 name=f"{name}_pool")(x)
            gate = layers.Conv2D(**arguments, name=f"{name}_conv", **conv)(gate)
            gate = layers.Activation("hard_sigmoid", name=f"{name}_gate")(gate)
            x = layers.Multiply(name=name)([x, gate])
        else:
            x = LayerScale(**arguments, data_format=data_format, name=name)(x)
    return x


def _recomputed(x, features, steps, epsilon, data_format, name, channels):
    """``steps`` on ``x`` (``concat(features)``, ``channels`` channels) as one
    ``RecomputedSequence`` named ``name``, its weights in ``*Weights`` layers with the
    plain layers' names, in their order."""
    conv = dict(padding="valid", kernel_initializer="he_normal", data_format=data_format)
    weights, previous = [], x
    for step, layer_name, arguments in steps:
        if step == "depthwise_conv":
            layer = DepthwiseConv2DWeights(7, padding="same", depthwise_initializer="he_normal",
                                           data_format=data_format, input_channels=channels,
                                           name=layer_name)
        elif step == "layer_norm":
            layer = LayerNormalizationWeights(epsilon=epsilon, input_channels=channels,
                                              name=layer_name)
        elif step == "conv":
            layer = Conv2DWeights(**arguments, input_channels=channels, name=layer_name, **conv)
            channels = arguments["filters"]
        elif step == "ese":
            layer = Conv2DWeights(**arguments, input_channels=channels, name=f"{layer_name}_conv",
                                  **conv)
        elif step == "layer_scale":
            layer = LayerScaleWeights(**arguments, data_format=data_format,
                                      input_channels=channels, name=layer_name)
        else:
            continue
        step_weights = list(layer(previous))
        weights += step_weights
        previous = step_weights[0]
    return RecomputedSequence([step for step, _, _ in steps], epsilon, data_format,
                              name=name)(features, weights, concatenation=x)


def drop_path_rates(drop_path_rate, num_blocks_list):
    """Per stage, the drop path rate of each block: linear from 0 at the first block of
    the net to ``drop_path_rate`` at the last (timm's ``calculate_drop_path_rates``)."""
    total = sum(num_blocks_list)
    rates = [drop_path_rate * b / (total - 1) for b in range(total)]
    starts = [sum(num_blocks_list[:i]) for i in range(len(num_blocks_list))]
    return [rates[start:start + n] for start, n in zip(starts, num_blocks_list)]


def pyramid_layers(variant):
    """``{"P{log2 stride}": layer name}`` of the stages timm's ``feature_info`` lists.

    A stage is listed when the next one downsamples, and the last stage always:
    ``rdnet_tiny`` gives ``{"P2": "stage0_block2_concat", "P3": "stage1_block2_concat",
    "P4": "stage5_block2_concat", "P5": "stage6_block2_concat"}``.
    """
    config = RDNET_VARIANTS[check_choice("variant", variant, tuple(RDNET_VARIANTS))]
    blocks, downsample = config["num_blocks_list"], config["is_downsample_block"]
    level = (config["patch_size"]).bit_length() - 1
    levels = {}
    for i, count in enumerate(blocks):
        if i > 0 and downsample[i]:
            level += 1
        if i + 1 == len(blocks) or downsample[i + 1]:
            levels[f"P{level}"] = f"stage{i}_block{count - 1}_concat"
    return levels


def _constructor(variant, title, parameters):
    def constructor(**kwargs):
        return RDNet(variant, **kwargs)

    constructor.__name__ = constructor.__qualname__ = title.replace("-", "")
    constructor.__doc__ = (f"{title} ({parameters:,} parameters with the 1000-class top): "
                           f"``RDNet({variant!r}, **kwargs)``.")
    return constructor


RDNetTiny = _constructor("rdnet_tiny", "RDNet-Tiny", 23_863_008)
RDNetSmall = _constructor("rdnet_small", "RDNet-Small", 50_436_448)
RDNetBase = _constructor("rdnet_base", "RDNet-Base", 87_451_096)
RDNetLarge = _constructor("rdnet_large", "RDNet-Large", 186_269_632)
