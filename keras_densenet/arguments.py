"""The ``DenseNet`` builder's arguments, checked into one ``Architecture``.

``Architecture.from_arguments(**arguments)`` checks every argument (a one-line
``ValueError`` naming the first bad one) and normalizes it; the result is a
frozen, JSON-serializable record that ``model.build`` turns into layers and
that every model keeps in its config. Nothing here imports Keras at import time.
"""

import dataclasses
import json
import numbers

from keras_densenet import architectures
from keras_densenet.checks import (check_activation, check_bool, check_choice,
                                   check_data_format, check_fraction, check_number,
                                   check_positive_int, image_shape)

POOLINGS = (None, "avg", "max")
STEM_PADDINGS = (None, "symmetric", "same")
STEM_TYPES = ("standard", "deep")
MEMORY_EFFICIENT_MODES = (False, True, "full")
MAX_LAYERS = 1000
"""More dense layers than this is refused: building would take minutes and no published net comes close."""


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A checked, complete description of one DenseNet (every ``DenseNet`` argument but
    ``weights``, ``input_tensor``, ``weights_source`` and ``name``), JSON-serializable.

    Field meanings are ``DenseNet``'s arguments; ``nb_layers_per_block`` is
    always a tuple (one count per block), ``nb_filter`` and ``data_format`` are
    resolved, and ``bn_epsilon`` and ``stem_padding`` may still be ``None`` until
    the weights are known. ``Architecture(**config["architecture"])`` restores
    one from a model's recorded config.
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
    def from_arguments(cls, *, depth, nb_dense_block, nb_layers_per_block, nb_filter,
                       input_tensor=None, **fields):
        """Check ``DenseNet``'s architecture arguments (a one-line ``ValueError`` naming the
        first bad one). ``depth`` and ``nb_dense_block`` give ``nb_layers_per_block`` where it
        is -1; ``input_tensor`` gives ``input_shape`` where that is ``None``; every other
        keyword is a field of the same name."""
        import keras

        f = dict(fields)
        f["data_format"] = check_data_format(f["data_format"] or keras.config.image_data_format())
        for flag in ("bottleneck", "subsample_initial_block", "include_top", "anti_alias"):
            f[flag] = check_bool(flag, f[flag])
        check_choice("memory_efficient", f["memory_efficient"], MEMORY_EFFICIENT_MODES)
        check_choice("pooling", f["pooling"], POOLINGS)
        f["activation"] = check_activation("activation", f["activation"])
        check_choice("stem_padding", f["stem_padding"], STEM_PADDINGS)
        check_choice("stem_type", f["stem_type"], STEM_TYPES)
        if not f["subsample_initial_block"] and (f["stem_type"] != "standard" or f["anti_alias"]):
            raise ValueError("stem_type='deep' and anti_alias=True change the ImageNet stem: "
                             "they need subsample_initial_block=True.")
        nb_dense_block = check_positive_int("nb_dense_block", nb_dense_block)
        f["growth_rate"] = check_positive_int("growth_rate", f["growth_rate"])
        f["classes"] = check_positive_int("classes", f["classes"])
        f["nb_filter"] = (2 * f["growth_rate"] if _is(nb_filter, -1)
                          else check_positive_int("nb_filter", nb_filter))
        f["reduction"] = check_fraction("reduction", f["reduction"])
        f["dropout_rate"] = check_fraction("dropout_rate", f["dropout_rate"])
        f["weight_decay"] = check_number("weight_decay", f["weight_decay"], "[0, inf)",
                                         lambda v: v >= 0)
        if f["bn_epsilon"] is not None:
            f["bn_epsilon"] = check_number("bn_epsilon", f["bn_epsilon"], "(0, 1)",
                                           lambda v: 0 < v < 1)
        f["nb_layers_per_block"] = resolve_layers_per_block(
            depth, nb_dense_block, nb_layers_per_block, f["bottleneck"])
        _check_channels_survive(f["nb_filter"], f["growth_rate"], f["nb_layers_per_block"],
                                f["reduction"])
        if f["input_shape"] is None and input_tensor is not None:
            f["input_shape"] = tuple(input_tensor.shape[1:])
        if f["input_shape"] is not None:
            image_shape(f["input_shape"], f["data_format"])
            f["input_shape"] = tuple(f["input_shape"])
        return cls(**f)

    @property
    def published_name(self):
        """``"densenet121"`` etc. for a published ImageNet variant
        (``architectures.VARIANTS``), else ``None``."""
        return architectures.published_name(self)

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


def _is(value, constant):
    """``value == constant`` for plain ints only (no arrays, no bools)."""
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and value == constant)
