"""The ``DenseNet`` builder: one functional-API function for every DenseNet.

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional
Networks" (CVPR 2017). CIFAR-style nets (3 blocks, 3x3 stem) and ImageNet-style
nets (4 blocks, 7x7/2 stem + max pool) differ only in their arguments.

``DenseNet(...)`` reads top to bottom in four steps: ``Architecture.from_arguments``
checks every argument, ``weights.resolve`` plans the weights (BN epsilon,
stem padding, input channels they need; nothing is downloaded yet),
``build`` adds the layers, and ``weights.load`` fills them. The model it
returns is a ``DenseNetModel``: a functional ``keras.Model`` that records its
architecture and serving facts (``densenet_config``) and keeps them in ``.keras`` files.
"""

import dataclasses
import json
import numbers

import keras
from keras import layers

from keras_densenet import blocks
from keras_densenet import weights as weights_lib
from keras_densenet.architectures import imagenet_architecture_name
from keras_densenet.checks import (check_activation, check_bool, check_choice,
                                   check_data_format, check_fraction, check_number,
                                   check_positive_int, image_shape)

POOLINGS = (None, "avg", "max")
STEM_PADDINGS = (None, "symmetric", "same")
STEM_TYPES = ("standard", "deep")
MEMORY_EFFICIENT_MODES = (False, True, "full")
DEFAULT_BN_EPSILON = 1.001e-5
MAX_LAYERS = 1000
"""More dense layers than this is refused: building would take minutes and no published net comes close."""
DEFAULT_EVAL = {"crop_pct": 0.875, "interpolation": "bicubic"}
"""ImageNet evaluation transform: shorter side to ``crop / crop_pct``, center crop (timm's defaults)."""


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A checked, complete description of one DenseNet (every ``DenseNet`` argument but
    ``weights``, ``input_tensor``, ``weights_source`` and ``name``), JSON-serializable.

    ``Architecture.from_arguments(**DenseNet_arguments)`` checks and normalizes;
    ``build(architecture)`` makes the graph. Field meanings are ``DenseNet``'s
    arguments; ``nb_layers_per_block`` is always a tuple (one count per block),
    ``nb_filter`` and ``data_format`` are resolved, and ``bn_epsilon`` and
    ``stem_padding`` may still be ``None`` until the weights are known.
    """

    nb_layers_per_block: tuple
    growth_rate: int
    nb_filter: int
    bottleneck: bool
    reduction: float
    dropout_rate: float
    weight_decay: float
    subsample_initial_block: bool
    include_top: bool
    pooling: str
    classes: int
    activation: str
    data_format: str
    input_shape: tuple
    bn_epsilon: float = None
    stem_padding: str = None
    memory_efficient: bool = False
    stem_type: str = "standard"
    anti_alias: bool = False

    @classmethod
    def from_arguments(cls, depth, nb_dense_block, growth_rate, nb_filter, nb_layers_per_block,
                       bottleneck, reduction, dropout_rate, weight_decay,
                       subsample_initial_block, include_top, input_shape, pooling, classes,
                       activation, data_format, bn_epsilon, stem_padding, memory_efficient,
                       stem_type, anti_alias, input_tensor=None):
        """Check every argument (one-line ``ValueError`` naming the first bad one)."""
        data_format = check_data_format(data_format or keras.config.image_data_format())
        bottleneck = check_bool("bottleneck", bottleneck)
        subsample_initial_block = check_bool("subsample_initial_block", subsample_initial_block)
        include_top = check_bool("include_top", include_top)
        anti_alias = check_bool("anti_alias", anti_alias)
        check_choice("memory_efficient", memory_efficient, MEMORY_EFFICIENT_MODES)
        check_choice("pooling", pooling, POOLINGS)
        activation = check_activation("activation", activation)
        check_choice("stem_padding", stem_padding, STEM_PADDINGS)
        check_choice("stem_type", stem_type, STEM_TYPES)
        if not subsample_initial_block and (stem_type != "standard" or anti_alias):
            raise ValueError("stem_type='deep' and anti_alias=True change the ImageNet stem: "
                             "they need subsample_initial_block=True.")
        nb_dense_block = check_positive_int("nb_dense_block", nb_dense_block)
        growth_rate = check_positive_int("growth_rate", growth_rate)
        classes = check_positive_int("classes", classes)
        nb_filter = 2 * growth_rate if _is(nb_filter, -1) else check_positive_int(
            "nb_filter", nb_filter)
        reduction = check_fraction("reduction", reduction)
        dropout_rate = check_fraction("dropout_rate", dropout_rate)
        weight_decay = check_number("weight_decay", weight_decay, "[0, inf)", lambda v: v >= 0)
        if bn_epsilon is not None:
            bn_epsilon = check_number("bn_epsilon", bn_epsilon, "(0, 1)", lambda v: 0 < v < 1)
        layers_per_block = resolve_layers_per_block(
            depth, nb_dense_block, nb_layers_per_block, bottleneck)
        _check_channels_survive(nb_filter, growth_rate, layers_per_block, reduction)
        if input_shape is None and input_tensor is not None:
            input_shape = tuple(input_tensor.shape[1:])
        if input_shape is not None:
            image_shape(input_shape, data_format)
            input_shape = tuple(input_shape)
        return cls(
            nb_layers_per_block=layers_per_block, growth_rate=growth_rate, nb_filter=nb_filter,
            bottleneck=bottleneck, reduction=reduction, dropout_rate=dropout_rate,
            weight_decay=weight_decay, subsample_initial_block=subsample_initial_block,
            include_top=include_top, pooling=pooling, classes=classes, activation=activation,
            data_format=data_format, input_shape=input_shape, bn_epsilon=bn_epsilon,
            stem_padding=stem_padding, memory_efficient=memory_efficient, stem_type=stem_type,
            anti_alias=anti_alias)

    @property
    def published_name(self):
        """``"densenet121"`` etc. for a published ImageNet architecture (``"densenetblur121d"``
        for timm's deep-stem, blur-pooled 121), else ``None``."""
        name = imagenet_architecture_name(
            self.nb_layers_per_block, self.growth_rate, self.nb_filter, self.bottleneck,
            self.reduction, self.subsample_initial_block)
        if self.stem_type == "standard" and not self.anti_alias:
            return name
        if name == "densenet121" and self.stem_type == "deep" and self.anti_alias:
            return "densenetblur121d"
        return None

    @property
    def downsamplings(self):
        """How many times the network halves the image (the stem's 2, one per transition)."""
        return (2 if self.subsample_initial_block else 0) + len(self.nb_layers_per_block) - 1

    def default_name(self):
        """``densenet121`` for a published net, else e.g. ``densenet_bc_16-16-16_k12``."""
        if self.published_name:
            return self.published_name
        variant = ("b" if self.bottleneck else "") + ("c" if self.reduction else "")
        kind = f"densenet_{variant}" if variant else "densenet"
        return f"{kind}_{'-'.join(map(str, self.nb_layers_per_block))}_k{self.growth_rate}"

    def to_json(self):
        """The fields as JSON types (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


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

    Returns:
        A ``DenseNetModel`` mapping images to ``(batch, classes)`` with the top,
        or to features: ``(batch, H/32, W/32, C)`` (ImageNet stem, 4 blocks),
        ``(batch, C)`` with pooling. Its ``densenet_config`` records the
        architecture, data format, preprocessing, weights source and pyramid levels.
    """
    architecture = Architecture.from_arguments(
        depth=depth, nb_dense_block=nb_dense_block, growth_rate=growth_rate,
        nb_filter=nb_filter, nb_layers_per_block=nb_layers_per_block, bottleneck=bottleneck,
        reduction=reduction, dropout_rate=dropout_rate, weight_decay=weight_decay,
        subsample_initial_block=subsample_initial_block, include_top=include_top,
        input_shape=input_shape, pooling=pooling, classes=classes, activation=activation,
        data_format=data_format, bn_epsilon=bn_epsilon, stem_padding=stem_padding,
        memory_efficient=memory_efficient, stem_type=stem_type, anti_alias=anti_alias,
        input_tensor=input_tensor)
    plan = weights_lib.resolve(weights, architecture=architecture.published_name,
                               include_top=architecture.include_top,
                               classes=architecture.classes, source=weights_source)
    architecture = _with_weights_requirements(architecture, plan)
    model = build(architecture, input_tensor=input_tensor, name=name, plan=plan)
    if plan is not None:
        weights_lib.load(model, plan)
    return model


def build(architecture, input_tensor=None, name=None, plan=None):
    """The ``DenseNetModel`` of a checked ``Architecture`` (random weights).

    ``plan`` (a ``weights.WeightsPlan``) only adds its facts to the recorded
    config (preprocessing, weights source); loading is the caller's step.
    """
    a = architecture
    img_input = _image_input(input_tensor, a, 2**a.downsamplings,
                             required_channels=plan.channels if plan else None)
    settings = blocks.BlockSettings(data_format=a.data_format, bn_epsilon=a.bn_epsilon,
                                    weight_decay=a.weight_decay, dropout_rate=a.dropout_rate,
                                    memory_efficient=a.memory_efficient)
    x = blocks.stem(img_input, settings, a.nb_filter, a.subsample_initial_block, a.stem_padding,
                    a.stem_type, a.anti_alias)
    first_level = 2 if a.subsample_initial_block else 0
    pyramid, channels = {}, a.nb_filter
    for block_index, nb_layers in enumerate(a.nb_layers_per_block, start=1):
        channels += nb_layers * a.growth_rate
        last = block_index == len(a.nb_layers_per_block)
        if not last:
            channels = int(channels * (1.0 - a.reduction))
        if a.memory_efficient == "full" and not last:  # no block output is stored
            x = blocks.recomputed_block_and_transition(
                x, settings, nb_layers, a.growth_rate, a.bottleneck, block_index, channels)
            continue
        x = blocks.dense_block(x, settings, nb_layers, a.growth_rate, a.bottleneck,
                               f"block{block_index}")
        pyramid[f"P{first_level + block_index - 1}"] = _layer_name(x)
        if not last:
            x = blocks.transition_block(x, settings, channels, f"transition{block_index}")
    x = settings.bn_relu(x, "final")
    x = _head(x, a, settings)
    inputs = (keras.utils.get_source_inputs(input_tensor) if input_tensor is not None
              else img_input)
    config = {
        "architecture": a.to_json(),
        "published_name": a.published_name,
        "data_format": a.data_format,
        "input_shape": list(img_input.shape[1:]),
        "preprocessing": plan.preprocessing if plan else None,
        "weights_source": _weights_source(plan),
        "class_names": None,
        **_eval_transform(plan),
        "pyramid": pyramid,
    }
    return DenseNetModel(inputs, x, name=name or a.default_name(), densenet_config=config)


def _head(x, a, settings):
    if a.include_top:
        x = layers.GlobalAveragePooling2D(data_format=a.data_format, name="avg_pool")(x)
        return layers.Dense(a.classes, activation=a.activation,
                            kernel_regularizer=settings.regularizer(), name="predictions")(x)
    if a.pooling == "avg":
        return layers.GlobalAveragePooling2D(data_format=a.data_format, name="avg_pool")(x)
    if a.pooling == "max":
        return layers.GlobalMaxPooling2D(data_format=a.data_format, name="max_pool")(x)
    return x


@keras.saving.register_keras_serializable(package="keras_densenet")
class DenseNetModel(keras.Model):
    """A functional DenseNet that records what it is and how to feed it.

    Built by ``DenseNet`` and every preset; behaves as any functional
    ``keras.Model`` (same layers, weights and outputs). ``densenet_config``
    is a JSON-serializable dict, saved inside ``.keras`` files:

    * ``architecture``: the checked ``Architecture`` fields (rebuild with
      ``build(Architecture(**config["architecture"]))``);
    * ``published_name``: ``"densenet121"`` etc., or ``None``;
    * ``data_format``, ``input_shape`` (``H``/``W`` may be ``None``);
    * ``preprocessing``: the ``preprocess_input`` mode the weights expect
      (``"torch"``, ``"caffe_bgr"``), ``None`` if unknown;
    * ``weights_source``: ``None`` (random), a ``weights.SOURCES`` name, or
      ``"file"``;
    * ``class_names``: list of names, or ``None`` (ImageNet's with 1000 classes);
    * ``crop_pct``, ``interpolation``: the eval transform (resize the shorter
      side to ``size / crop_pct`` with ``interpolation``, center-crop ``size``);
    * ``pyramid``: ``{"P2": layer name, ...}`` of every dense block's output (with
      ``memory_efficient="full"`` only the last block's: the others are never stored),
      by stride (see ``keras_densenet.features``).

    ``model_config(model)`` reads it (also for models saved before it existed).
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        # The config travels as a keyword so that Keras still treats this class as
        # functional (same constructor arguments as keras.Model) when cloning and loading.
        config = kwargs.pop("densenet_config", None)
        super().__init__(inputs, outputs, name=name, **kwargs)
        self._config_json = json.dumps(config) if config else None  # a str: Keras tracks no str
        self._size_check = _size_check(config)

    @property
    def densenet_config(self):
        """A copy of the recorded config (a dict; ``None`` for a bare clone)."""
        return json.loads(self._config_json) if self._config_json else None

    def update_config(self, **facts):
        """Record ``facts`` (keys of ``CONFIG_KEYS``), e.g. ``class_names=[...]`` after training."""
        unknown = sorted(set(facts) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"Unknown config keys {unknown}; known: {CONFIG_KEYS}.")
        config = {**(self.densenet_config or {}), **facts}
        self._config_json = json.dumps(config)
        self._size_check = _size_check(config)

    def get_config(self):
        return {**super().get_config(), "densenet_config": self.densenet_config}

    def call(self, inputs, training=None, mask=None):
        _check_image_size(inputs, *self._size_check)
        return super().call(inputs, training=training, mask=mask)

    def make_train_function(self, force=False):
        """Keras' train function, with the optimizer's variables created first.

        Under TensorFlow (without a distribution strategy) Keras creates the
        optimizer's variables while tracing the first training step, so
        TensorFlow traces the step twice and keeps the first graph: for
        DenseNet-121 with ``memory_efficient="full"`` about 250 MB more training
        memory and twice the tracing time. Building the optimizer here, as Keras
        does before training on JAX and PyTorch, traces the step once.
        """
        if self.optimizer is not None and not self.optimizer.built and self.built:
            self.optimizer.build(self.trainable_variables)
        return super().make_train_function(force)

    def load_weights(self, filepath, *args, **kwargs):
        """Keras' ``load_weights``; also a checkpoint written in another memory mode's order.

        A ``save_weights`` file holds the optimizer's state as a list in layer
        order, and ``memory_efficient="full"`` puts a bottleneck layer's
        ``_conv2`` before its ``_bn2``. A file that does not load for that
        reason (``BackupAndRestore`` resuming a run in another mode, say) is
        loaded into this network built in the other order, and every variable,
        optimizer state included, is copied from it by path. Any other error
        is Keras' own.
        """
        try:
            return super().load_weights(filepath, *args, **kwargs)
        except ValueError as error:
            twin = self._in_the_other_order()
            if twin is None:
                raise
            try:
                keras.Model.load_weights(twin, filepath, *args, **kwargs)
            except ValueError:
                raise error from None
        copy_training_state(twin, self)

    def _in_the_other_order(self):
        """This network, compiled with a fresh copy of its optimizer, in the memory mode
        whose variables come in the other order; ``None`` if the orders are the same or
        the recorded architecture is not all of this model (a new head on a backbone)."""
        mode = memory_mode(self)
        if mode is None or self.optimizer is None:
            return None
        twin = in_memory_mode(self, False if mode == "full" else "full")
        if twin is None or [v.path for v in twin.weights] == [v.path for v in self.weights]:
            return None
        optimizer = self.optimizer
        twin.compile(optimizer=type(optimizer).from_config(optimizer.get_config()))
        twin.optimizer.build(twin.trainable_variables)
        return twin


def in_memory_mode(model, memory_efficient):
    """``model``'s network built with ``memory_efficient`` instead, holding its weights.

    The same layer names, weights (copied by path) and recorded config (but
    the pyramid, which ``"full"`` shortens); e.g. ``in_memory_mode(model, False)``
    for a model trained with ``memory_efficient="full"``: the plain layout
    serves faster and folds its BNs. ``None`` where ``model`` records no
    architecture or the recorded one is not all of it (a new head on a backbone).
    """
    if memory_mode(model) is None:
        return None
    config = model.densenet_config
    architecture = Architecture(**config["architecture"])
    twin = build(dataclasses.replace(architecture, memory_efficient=memory_efficient),
                 name=model.name)
    if sorted(v.path for v in model.weights) != sorted(v.path for v in twin.weights):
        return None
    twin.update_config(**{key: value for key, value in config.items()
                          if key not in ("architecture", "pyramid")})
    copy_training_state(model, twin)
    return twin


def memory_mode(model):
    """The ``memory_efficient`` that ``model`` was built with; ``None`` where it records
    no architecture (a model that this package did not build, or of keras-densenet 0.1)."""
    architecture = (getattr(model, "densenet_config", None) or {}).get("architecture")
    return architecture.get("memory_efficient", False) if architecture else None


def training_state(model):
    """``{key: variable}`` of ``model``'s weights (key: the path) and of its optimizer's
    variables (key: ``(i, name)``, the i-th optimizer in them, as a LossScaleOptimizer
    lists its own and then its inner optimizer's: their paths start with instance names
    such as ``"sgd_2/"``, which differ between two models)."""
    state = {variable.path: variable for variable in model.weights}
    owners = {}
    optimizer = getattr(model, "optimizer", None)  # an uncompiled model has none
    for variable in optimizer.variables if optimizer is not None else ():
        owner, _, name = variable.path.rpartition("/")
        state[owners.setdefault(owner, len(owners)), name] = variable
    return state


def copy_training_state(source, target):
    """Give each of ``target``'s ``training_state`` variables the value of ``source``'s
    under the same key (the same network in another memory mode: the same keys)."""
    values = training_state(source)
    for key, variable in training_state(target).items():
        variable.assign(values[key])


def min_image_size(config):
    """Smallest height/width the recorded architecture takes (``2 ** downsamplings``),
    or ``None`` when ``config`` records no architecture."""
    architecture = (config or {}).get("architecture")
    return 2 ** Architecture(**architecture).downsamplings if architecture else None


def _size_check(config):
    """``(min_image_size, data_format)`` of ``config``, kept so that ``call`` reads no JSON."""
    return min_image_size(config), (config or {}).get("data_format")


def _check_image_size(inputs, min_size, data_format):
    """A one-line ``ValueError`` for images smaller than the network's total stride
    (a variable-size model accepts any H, W when built; 1-3 px images otherwise fail deep
    inside a pooling layer, or give garbage in eager mode)."""
    shape = getattr(inputs, "shape", None)
    if min_size is None or shape is None or len(shape) != 4:
        return
    spatial = shape[1:3] if data_format == "channels_last" else shape[2:]
    if any(size is not None and int(size) < min_size for size in spatial):
        raise ValueError(
            f"Images of {tuple(spatial)} pixels are too small for this network: it halves them "
            f"{min_size.bit_length() - 1} times, so height and width must be at least {min_size}.")


CONFIG_KEYS = ("architecture", "published_name", "data_format", "input_shape", "preprocessing",
               "weights_source", "class_names", "crop_pct", "interpolation", "pyramid")
"""The keys of ``DenseNetModel.densenet_config``."""


def model_config(model):
    """The ``densenet_config`` of ``model`` (a copy), for any model this package made.

    A ``DenseNetModel`` returns what it recorded. A functional model that
    wraps one (e.g. a fine-tuned backbone with a new head) returns the inner
    config with the outer input shape. A model saved by keras-densenet 0.1
    (before configs were recorded) gets one derived from its layers: data
    format from its convolutions, pyramid from its block names, preprocessing
    ``None``.
    """
    config = getattr(model, "densenet_config", None)
    if config:
        return config
    inner = [layer for layer in model.layers if getattr(layer, "densenet_config", None)]
    if inner:
        config = model_config(inner[0])
        config["input_shape"] = list(model.input.shape[1:])
        return config
    return _legacy_config(model)


def _legacy_config(model):
    import re

    data_format = next((layer.data_format for layer in model.layers
                        if isinstance(layer, layers.Conv2D)), None)
    if data_format is None:
        raise ValueError(f"Model {model.name!r} has no convolution: is it a keras_densenet "
                         "DenseNet?")
    last_layer = {}
    for layer in model.layers:
        match = re.fullmatch(r"block(\d+)_(?:layer(\d+)_concat|concat)", layer.name)
        if match:
            block, index = int(match.group(1)), int(match.group(2) or 10**9)
            if index >= last_layer.get(block, (0, ""))[0]:
                last_layer[block] = (index, layer.name)
    first_level = 2 if any(layer.name == "stem_pool" for layer in model.layers) else 0
    return {
        "architecture": None, "published_name": None, "data_format": data_format,
        "input_shape": list(model.input.shape[1:]), "preprocessing": None,
        "weights_source": None, "class_names": None, **DEFAULT_EVAL,
        "pyramid": {f"P{first_level + block - 1}": name
                    for block, (_, name) in sorted(last_layer.items())},
    }


def resolve_layers_per_block(depth, nb_dense_block, nb_layers_per_block, bottleneck):
    """The number of dense layers in each block, as a tuple of ``nb_dense_block`` ints."""
    if not isinstance(nb_layers_per_block, (numbers.Integral, str)) and hasattr(
            nb_layers_per_block, "__len__"):
        counts = list(nb_layers_per_block)
        if len(counts) != nb_dense_block:
            raise ValueError(
                f"nb_layers_per_block has {len(counts)} entries but "
                f"nb_dense_block is {nb_dense_block}: give one count per dense block.")
        counts = tuple(check_positive_int("nb_layers_per_block", n) for n in counts)
    elif not _is(nb_layers_per_block, -1):
        n = check_positive_int("nb_layers_per_block", nb_layers_per_block)
        counts = (n,) * nb_dense_block
    else:
        counts = (_layers_from_depth(depth, nb_dense_block, bottleneck),) * nb_dense_block
    if sum(counts) > MAX_LAYERS:
        raise ValueError(f"{sum(counts)} dense layers is more than this package builds "
                         f"(at most {MAX_LAYERS}); check depth / nb_layers_per_block.")
    return counts


def _layers_from_depth(depth, nb_dense_block, bottleneck):
    convs_per_layer = 2 if bottleneck else 1
    # depth = stem conv + (nb_dense_block - 1) transitions + classifier + convs in blocks
    other_layers = nb_dense_block + 1
    step = nb_dense_block * convs_per_layer
    valid = isinstance(depth, numbers.Integral) and not isinstance(depth, bool)
    per_block, remainder = divmod(depth - other_layers, step) if valid else (0, 1)
    if remainder or per_block < 1:
        raise ValueError(
            f"depth={depth!r} is not valid for nb_dense_block={nb_dense_block}"
            f"{' with bottleneck' if bottleneck else ''}: depth must be {step}*N+{other_layers} "
            f"for a positive integer N (e.g. {step + other_layers}, {2 * step + other_layers}, "
            f"{4 * step + other_layers}), or pass nb_layers_per_block explicitly.")
    if per_block * nb_dense_block > MAX_LAYERS:
        raise ValueError(f"depth={depth} means {per_block * nb_dense_block} dense layers, more "
                         f"than this package builds (at most {MAX_LAYERS}).")
    return per_block


def _check_channels_survive(nb_filter, growth_rate, layers_per_block, reduction):
    """Every transition must keep at least one channel (a large ``reduction`` may not)."""
    channels = nb_filter
    for index, nb_layers in enumerate(layers_per_block[:-1], start=1):
        channels = int((channels + nb_layers * growth_rate) * (1.0 - reduction))
        if channels < 1:
            raise ValueError(f"reduction={reduction} leaves transition {index} with no "
                             "channels; use a smaller reduction (0.5 is DenseNet-C's).")


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


def _weights_source(plan):
    if plan is None:
        return None
    return plan.entry["source"] if plan.entry else "file"


def _eval_transform(plan):
    """``crop_pct`` and ``interpolation`` of the weights' manifest source, else ``DEFAULT_EVAL``."""
    if plan is None or not plan.entry:
        return dict(DEFAULT_EVAL)
    source = weights_lib.sources()[plan.entry["source"]]
    return {key: source.get(key, DEFAULT_EVAL[key]) for key in DEFAULT_EVAL}


def _image_input(input_tensor, architecture, min_size, required_channels):
    """The ``keras.Input`` (or the given tensor) after checking its shape; without an
    ``input_shape``, of the weights' channels (any other count is adapted on loading)."""
    data_format, input_shape = architecture.data_format, architecture.input_shape
    if input_shape is None:
        channels = required_channels or 3
        input_shape = ((None, None, channels) if data_format == "channels_last"
                       else (channels, None, None))
    spatial, _ = image_shape(input_shape, data_format)
    for size in spatial:
        if size is not None and size < min_size:
            raise ValueError(
                f"input_shape {input_shape} is too small: this network halves the image "
                f"{min_size.bit_length() - 1} times, so height and width must be at least "
                f"{min_size}.")
    if input_tensor is None:
        return layers.Input(shape=input_shape, name="image")
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape, name="image")
    return input_tensor


def _layer_name(tensor):
    return tensor._keras_history.operation.name


def _is(value, constant):
    """``value == constant`` for plain ints only (no arrays, no bools)."""
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and value == constant)
