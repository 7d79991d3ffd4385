"""Published DenseNet variants, one record each; Keras-free constants the package shares.

A variant is one ``Variant`` in ``VARIANTS``: its name, dense block sizes,
growth rate, stem and widths. Presets (``DenseNetImageNet121``...), the
published name a model records, ``keras-densenet port --arch``, the
``summary`` table and the CLI's ``--arch`` choices are all derived from it;
the published weight files of a variant are its entries in
``weights/manifest.json`` (with the eval settings of their source). Adding a
variant is one record here plus its manifest entries; an RDNet variant is one
entry of ``RDNET_VARIANTS`` (timm's model args). Nothing here imports
Keras, so the command line and the weights registry can read it at once.
"""

import dataclasses

BOTTLENECK_WIDTH = 4
"""The 1x1 bottleneck conv produces ``BOTTLENECK_WIDTH * growth_rate`` maps."""
DEFAULT_BN_EPSILON = 1.001e-5
"""BatchNormalization epsilon without weights (keras.applications')."""
DEFAULT_EVAL = {"crop_pct": 0.875, "interpolation": "bicubic"}
"""ImageNet evaluation transform: shorter side to ``crop / crop_pct``, center crop (timm's defaults)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One published DenseNet, as ``keras_densenet.DenseNet`` arguments plus its names.

    Attributes:
        name: ``"densenet121"``: the published name (timm's where timm has it).
        constructor: the preset function of ``keras_densenet`` that builds it
            (``"DenseNetImageNet121"``), or ``None`` (the CIFAR networks are built
            with ``DenseNetCIFAR(name)``).
        nb_layers_per_block: dense layers in each block.
        growth_rate: k.
        nb_filter: channels of the stem.
        bottleneck, reduction: DenseNet-B and -C (``reduction`` 0.5 compresses).
        subsample_initial_block: the ImageNet stem (7x7/2 conv or deep 3x3 stem,
            then pooling to H/4); ``False``: the CIFAR stem (one 3x3 conv).
        stem_type: ``"standard"`` or ``"deep"`` (three 3x3 convs, timm's ``*d``).
        anti_alias: blur-pooled stem (timm's ``densenetblur121d``).
        input_shape, classes: the published training set's (ImageNet's 224 px
            and 1000 classes, CIFAR's 32 px and 10 classes).
        reference: where the variant is published.
    """

    name: str
    constructor: str
    nb_layers_per_block: tuple
    growth_rate: int
    nb_filter: int
    bottleneck: bool = True
    reduction: float = 0.5
    subsample_initial_block: bool = True
    stem_type: str = "standard"
    anti_alias: bool = False
    input_shape: tuple = (224, 224, 3)
    classes: int = 1000
    reference: str = ""

    @property
    def imagenet(self):
        """Whether this is an ImageNet network (``weights="imagenet"`` may apply)."""
        return self.subsample_initial_block

    def builder_arguments(self):
        """The ``DenseNet`` arguments that fix this architecture."""
        return {"nb_dense_block": len(self.nb_layers_per_block),
                **{field: getattr(self, field) for field in ARCHITECTURE_FIELDS}}


ARCHITECTURE_FIELDS = ("nb_layers_per_block", "growth_rate", "nb_filter", "bottleneck",
                       "reduction", "subsample_initial_block", "stem_type", "anti_alias")
"""The ``Variant`` fields that are ``DenseNet`` arguments; a preset refuses them as keywords."""

_CIFAR = dict(subsample_initial_block=False, input_shape=(32, 32, 3), classes=10)
_CIFAR_PLAIN = dict(_CIFAR, bottleneck=False, reduction=0.0, nb_filter=16,
                    reference="Huang et al. 2017, Table 2 (DenseNet)")
_CIFAR_BC = dict(_CIFAR, reference="Huang et al. 2017, Table 2 (DenseNet-BC)")
_WIDE_BC = dict(_CIFAR, reference="the authors' README (Wide-DenseNet-BC)")
_TABLE_1 = "Huang et al. 2017, Table 1"

VARIANTS = {variant.name: variant for variant in (
    Variant("densenet121", "DenseNetImageNet121", (6, 12, 24, 16), 32, 64, reference=_TABLE_1),
    Variant("densenet161", "DenseNetImageNet161", (6, 12, 36, 24), 48, 96, reference=_TABLE_1),
    Variant("densenet169", "DenseNetImageNet169", (6, 12, 32, 32), 32, 64, reference=_TABLE_1),
    Variant("densenet201", "DenseNetImageNet201", (6, 12, 48, 32), 32, 64, reference=_TABLE_1),
    Variant("densenet264", "DenseNetImageNet264", (6, 12, 64, 48), 32, 64, reference=_TABLE_1),
    Variant("densenet232", "DenseNetImageNet232", (6, 12, 48, 48), 48, 96,
            reference="Pleiss et al. 2017, the memory-efficient technical report"),
    Variant("densenetblur121d", "DenseNetBlur121d", (6, 12, 24, 16), 32, 64, stem_type="deep",
            anti_alias=True, reference="timm (deep 3x3 stem, blur-pooled)"),
    Variant("densenet264d", "DenseNetImageNet264d", (6, 12, 64, 48), 48, 96, stem_type="deep",
            reference="timm (deep 3x3 stem; no published weights)"),
    # C10 parameter counts in the comments.
    Variant("densenet40_k12", None, (12, 12, 12), 12, **_CIFAR_PLAIN),  # 1.0M
    Variant("densenet100_k12", None, (32, 32, 32), 12, **_CIFAR_PLAIN),  # 7.0M
    Variant("densenet100_k24", None, (32, 32, 32), 24, **_CIFAR_PLAIN),  # 27.2M
    Variant("densenet_bc100_k12", None, (16, 16, 16), 12, 24, **_CIFAR_BC),  # 0.8M
    Variant("densenet_bc250_k24", None, (41, 41, 41), 24, 48, **_CIFAR_BC),  # 15.3M
    Variant("densenet_bc190_k40", None, (31, 31, 31), 40, 80, **_CIFAR_BC),  # 25.6M
    # Shallow and wide: faster per parameter on GPUs.
    Variant("wide_densenet_bc40_k36", None, (6, 6, 6), 36, 72, **_WIDE_BC),
    Variant("wide_densenet_bc40_k48", None, (6, 6, 6), 48, 96, **_WIDE_BC),
    Variant("wide_densenet_bc40_k60", None, (6, 6, 6), 60, 120, **_WIDE_BC),
)}
"""Every published variant by name: the ImageNet family first, then the paper's CIFAR networks."""

IMAGENET_VARIANTS = tuple(name for name, variant in VARIANTS.items() if variant.imagenet)
"""Names of the ImageNet variants: ``port --arch``, ``classify --arch``, ``weights="imagenet"``."""
CIFAR_VARIANTS = tuple(name for name, variant in VARIANTS.items() if not variant.imagenet)
"""Names of the CIFAR networks, for ``DenseNetCIFAR``."""


def published_name(architecture):
    """The ``VARIANTS`` name of ``architecture`` (anything with the ``ARCHITECTURE_FIELDS``
    as attributes, e.g. an ``arguments.Architecture``) if it is an ImageNet variant, else ``None``."""
    fields = tuple(getattr(architecture, field) for field in ARCHITECTURE_FIELDS)
    for name in IMAGENET_VARIANTS:
        variant = VARIANTS[name]
        if fields == tuple(getattr(variant, field) for field in ARCHITECTURE_FIELDS):
            return name
    return None


# RDNet ("DenseNets Reloaded", Kim et al., ECCV 2024): a variant is timm's dict of model args.
_SHARED = dict(bottleneck_width_ratio=4.0, transition_compression_ratio=0.5, patch_size=4,
               ls_init_value=1e-6, norm_eps=1e-6)

RDNET_VARIANTS = {
    # timm's model_args (timm/models/rdnet.py) with its defaults written out. The first
    # is_downsample_block entry is unused: stage 0 has no transition.
    "rdnet_tiny": dict(
        _SHARED, num_init_features=64, growth_rates=(64, 104, 128, 128, 128, 128, 224),
        num_blocks_list=(3,) * 7,
        is_downsample_block=(None, True, True, False, False, False, True),
        block_type=("Block",) * 2 + ("BlockESE",) * 5),
    "rdnet_small": dict(
        _SHARED, num_init_features=72, growth_rates=(64,) + (128,) * 8 + (240,) * 2,
        num_blocks_list=(3,) * 11,
        is_downsample_block=(None, True, True) + (False,) * 6 + (True, False),
        block_type=("Block",) * 2 + ("BlockESE",) * 9),
    "rdnet_base": dict(
        _SHARED, num_init_features=120, growth_rates=(96, 128) + (168,) * 7 + (336,) * 2,
        num_blocks_list=(3,) * 11,
        is_downsample_block=(None, True, True) + (False,) * 6 + (True, False),
        block_type=("Block",) * 2 + ("BlockESE",) * 9),
    "rdnet_large": dict(
        _SHARED, num_init_features=144, growth_rates=(128, 192) + (256,) * 8 + (360,) * 2,
        num_blocks_list=(3,) * 12,
        is_downsample_block=(None, True, True) + (False,) * 7 + (True, False),
        block_type=("Block",) * 2 + ("BlockESE",) * 10),
}
"""RDNet variants (``keras_densenet.rdnet``) by timm name: plain data (numbers, strings, tuples)."""
