"""Prebuilt DenseNets: one constructor per ImageNet variant, and the paper's CIFAR networks.

Every constructor is derived from its ``architectures.VARIANTS`` record and is
a thin call of ``keras_densenet.DenseNet``: every builder argument but the
ones the variant fixes (``architectures.ARCHITECTURE_FIELDS``) can be passed
through ``**kwargs``.
"""

from keras_densenet.architectures import (ARCHITECTURE_FIELDS, CIFAR_VARIANTS, IMAGENET_VARIANTS,
                                          VARIANTS)
from keras_densenet.builder import DenseNet

ARCHITECTURE_ARGUMENTS = ("depth", "nb_dense_block", *ARCHITECTURE_FIELDS)
"""Builder arguments a preset fixes: passing one would build another net under the preset's name."""


def _refuse_architecture_arguments(preset, kwargs):
    fixed = sorted(set(kwargs) & set(ARCHITECTURE_ARGUMENTS))
    if fixed:
        raise ValueError(f"{preset} fixes {', '.join(fixed)}; build another architecture "
                         "with keras_densenet.DenseNet(...) instead.")


def DenseNetImageNet(architecture, include_top=True, weights=None, input_tensor=None,
                     input_shape=None, pooling=None, classes=1000, **kwargs):
    """The ImageNet DenseNet-BC named ``architecture`` in ``architectures.IMAGENET_VARIANTS``
    (e.g. ``"densenet121"``).

    Bottleneck, reduction 0.5, ImageNet stem, 4 blocks. Input ``(224, 224, 3)``
    gives ``(batch, 1000)`` with the top, or ``(batch, 7, 7, C)`` features
    without it (``C`` = 1024 for DenseNet-121).
    """
    if architecture not in IMAGENET_VARIANTS:
        raise ValueError(f"architecture must be one of {IMAGENET_VARIANTS}; got {architecture!r}.")
    _refuse_architecture_arguments(architecture, kwargs)
    return DenseNet(
        **VARIANTS[architecture].builder_arguments(),
        include_top=include_top, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape, pooling=pooling, classes=classes,
        name=kwargs.pop("name", architecture), **kwargs)


def DenseNetCIFAR(preset, input_shape=(32, 32, 3), classes=10, **kwargs):
    """One of the paper's CIFAR networks, by name from ``architectures.CIFAR_VARIANTS``.

    ``DenseNetCIFAR("densenet_bc100_k12")`` is DenseNet-BC (L=100, k=12).
    """
    if preset not in CIFAR_VARIANTS:
        raise ValueError(f"preset must be one of {CIFAR_VARIANTS}; got {preset!r}.")
    _refuse_architecture_arguments(preset, kwargs)
    return DenseNet(**VARIANTS[preset].builder_arguments(), input_shape=input_shape,
                    classes=classes, name=kwargs.pop("name", preset), **kwargs)


def _constructor(variant):
    def constructor(**kwargs):
        return DenseNetImageNet(variant.name, **kwargs)

    constructor.__name__ = constructor.__qualname__ = variant.constructor
    constructor.__doc__ = (
        f"``{variant.name}``: {len(variant.nb_layers_per_block)} blocks of "
        f"{variant.nb_layers_per_block} layers, k={variant.growth_rate}, "
        f"{variant.stem_type} stem{' (blur-pooled)' if variant.anti_alias else ''}; "
        f"{variant.reference}. Arguments: ``DenseNetImageNet``'s.")
    return constructor


PRESETS = {VARIANTS[name].constructor: _constructor(VARIANTS[name]) for name in IMAGENET_VARIANTS}
"""``{"DenseNetImageNet121": constructor, ...}``: one per ImageNet variant."""
globals().update(PRESETS)
