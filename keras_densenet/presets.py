"""Prebuilt DenseNets: the ImageNet family and the paper's CIFAR networks.

Each constructor is a thin call of ``keras_densenet.DenseNet``; every keyword
argument of the builder can be passed through ``**kwargs``.
"""

from keras_densenet.architectures import CIFAR_PRESETS, IMAGENET_ARCHITECTURES
from keras_densenet.model import DenseNet

ARCHITECTURE_ARGUMENTS = ("depth", "nb_dense_block", "growth_rate", "nb_filter",
                          "nb_layers_per_block", "bottleneck", "reduction",
                          "subsample_initial_block")
"""Builder arguments a preset fixes: passing one would build another net under the preset's name."""


def _refuse_architecture_arguments(preset, kwargs):
    fixed = sorted(set(kwargs) & set(ARCHITECTURE_ARGUMENTS))
    if fixed:
        raise ValueError(f"{preset} fixes {', '.join(fixed)}; build another architecture "
                         "with keras_densenet.DenseNet(...) instead.")


def DenseNetImageNet(architecture, include_top=True, weights=None, input_tensor=None,
                     input_shape=None, pooling=None, classes=1000, **kwargs):
    """An ImageNet DenseNet-BC named in ``IMAGENET_ARCHITECTURES`` (e.g. ``"densenet121"``).

    Bottleneck, reduction 0.5, 7x7/2 + max-pool stem, 4 blocks. Input
    ``(224, 224, 3)`` gives ``(batch, 1000)`` with the top, or
    ``(batch, 7, 7, C)`` features without it (``C`` = 1024/2208/1664/1920/2688).
    """
    if architecture not in IMAGENET_ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {sorted(IMAGENET_ARCHITECTURES)}; got {architecture!r}."
        )
    _refuse_architecture_arguments(architecture, kwargs)
    layers_per_block, growth_rate, nb_filter = IMAGENET_ARCHITECTURES[architecture]
    return DenseNet(
        nb_dense_block=len(layers_per_block),
        nb_layers_per_block=list(layers_per_block),
        growth_rate=growth_rate,
        nb_filter=nb_filter,
        bottleneck=True,
        reduction=0.5,
        subsample_initial_block=True,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        name=kwargs.pop("name", architecture),
        **kwargs,
    )


def DenseNetImageNet121(**kwargs):
    """DenseNet-121 (k=32): 7,978,856 trainable parameters with the 1000-class top."""
    return DenseNetImageNet("densenet121", **kwargs)


def DenseNetImageNet161(**kwargs):
    """DenseNet-161 (k=48): 28,681,000 trainable parameters with the 1000-class top."""
    return DenseNetImageNet("densenet161", **kwargs)


def DenseNetImageNet169(**kwargs):
    """DenseNet-169 (k=32): 14,149,480 trainable parameters with the 1000-class top."""
    return DenseNetImageNet("densenet169", **kwargs)


def DenseNetImageNet201(**kwargs):
    """DenseNet-201 (k=32): 20,013,928 trainable parameters with the 1000-class top."""
    return DenseNetImageNet("densenet201", **kwargs)


def DenseNetImageNet264(**kwargs):
    """DenseNet-264 (k=32), from the paper's Table 1 (no published weights)."""
    return DenseNetImageNet("densenet264", **kwargs)


def DenseNetImageNet232(**kwargs):
    """DenseNet-232 (k=48) of the memory-efficient technical report (no weights published here)."""
    return DenseNetImageNet("densenet232", **kwargs)


def DenseNetBlur121d(**kwargs):
    """timm's ``densenetblur121d``: DenseNet-121 with the deep 3x3 stem and a blur-pooled stem."""
    return DenseNetImageNet("densenet121", stem_type="deep", anti_alias=True,
                            name=kwargs.pop("name", "densenetblur121d"), **kwargs)


def DenseNetCIFAR(preset, input_shape=(32, 32, 3), classes=10, **kwargs):
    """One of the paper's CIFAR networks, by name from ``CIFAR_PRESETS``.

    ``DenseNetCIFAR("densenet_bc100_k12")`` is DenseNet-BC (L=100, k=12).
    """
    if preset not in CIFAR_PRESETS:
        raise ValueError(f"preset must be one of {sorted(CIFAR_PRESETS)}; got {preset!r}.")
    _refuse_architecture_arguments(preset, kwargs)
    return DenseNet(
        **{**CIFAR_PRESETS[preset], "name": preset, **kwargs},
        input_shape=input_shape,
        classes=classes,
    )
