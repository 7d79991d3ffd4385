"""``DenseNetModel``, the model every builder returns, and ``build``, its graph from an
``arguments.Architecture``.

``build(architecture)`` adds the layers (``blocks``) and records the
architecture and serving facts in the model (``densenet_config``, kept in
``.keras`` files; keys in ``config.CONFIG_KEYS``). ``in_memory_mode`` rebuilds a
model in another memory mode with its weights; a ``DenseNetModel`` loads a
checkpoint written in another mode's variable order through it.
"""

import dataclasses
import json

import keras
from keras import layers

from keras_densenet import blocks
from keras_densenet.architectures import DEFAULT_EVAL
from keras_densenet.arguments import Architecture
from keras_densenet.checks import image_shape
from keras_densenet.config import CONFIG_KEYS, DEFAULTS, min_image_size
from keras_densenet.memory_modes import copy_training_state, memory_mode
from keras_densenet.preprocessing import normalization
from keras_densenet.utils import channel_axis


def build(architecture, input_tensor=None, name=None, default_channels=3, **facts):
    """The ``DenseNetModel`` of a checked ``arguments.Architecture`` (random weights).

    ``default_channels``: the image channels where ``architecture.input_shape``
    is ``None``. ``facts``: further ``config.CONFIG_KEYS`` entries to record
    (``preprocessing``, ``weights_source``, ``crop_pct``, ``interpolation``: what
    the weights say); loading weights is the caller's step.
    """
    a = architecture
    img_input = image_input(input_tensor, a.input_shape, a.data_format, 2**a.downsamplings,
                            default_channels)
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
    cam_layer = _layer_name(x)
    x = _head(x, a, settings)
    inputs = (keras.utils.get_source_inputs(input_tensor) if input_tensor is not None
              else img_input)
    config = {
        **DEFAULTS,
        "architecture": a.to_json(),
        "published_name": a.published_name,
        "data_format": a.data_format,
        "input_shape": list(img_input.shape[1:]),
        "preprocessing": None,
        "weights_source": None,
        "class_names": None,
        **DEFAULT_EVAL,
        "pyramid": pyramid,
        "cam_layer": cam_layer,
        **facts,
    }
    if config["preprocessing"]:
        channels = img_input.shape[channel_axis(a.data_format)]
        config["input_normalization"] = normalization(config["preprocessing"], channels)
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
    is a JSON-serializable dict with the keys of ``config.CONFIG_KEYS``, saved
    inside ``.keras`` files:

    ``architecture`` restores the network (``build(Architecture(**config["architecture"]))``),
    the other keys say how to feed it and read its outputs.

    ``config.model_config(model)`` reads it (also for models saved before it existed).
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


def image_input(input_tensor, input_shape, data_format, min_size, default_channels=3):
    """The ``keras.Input`` named ``image`` (or ``input_tensor``) after checking its shape:
    ``input_shape`` (default: ``input_tensor``'s, else any size with ``default_channels``)
    must be an image shape in ``data_format`` of at least ``min_size`` pixels a side."""
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        input_shape = ((None, None, default_channels) if data_format == "channels_last"
                       else (default_channels, None, None))
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
