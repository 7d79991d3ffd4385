"""Published DenseNet architectures: the ImageNet family and the CIFAR presets.

A DenseNet is fully described by a few numbers; this module names the
published ones so that presets, weight files and the CLI all agree on them.
"""

IMAGENET_ARCHITECTURES = {
    # name: (layers per dense block, growth rate k, stem filters)
    "densenet121": ((6, 12, 24, 16), 32, 64),
    "densenet161": ((6, 12, 36, 24), 48, 96),
    "densenet169": ((6, 12, 32, 32), 32, 64),
    "densenet201": ((6, 12, 48, 32), 32, 64),
    "densenet264": ((6, 12, 64, 48), 32, 64),
    # the technical report (Pleiss et al. 2017; authors' README: 21.2% top-1 error)
    "densenet232": ((6, 12, 48, 48), 48, 96),
}
"""ImageNet DenseNet-BC: bottleneck, reduction 0.5, 7x7/2 + max-pool stem."""

CIFAR_PRESETS = {
    # Huang et al. 2017, Table 2 (C10 parameter counts in the comments).
    # DenseNet (no B, no C) starts with 16 channels; DenseNet-BC with 2k.
    "densenet40_k12": dict(depth=40, growth_rate=12, nb_filter=16),  # 1.0M
    "densenet100_k12": dict(depth=100, growth_rate=12, nb_filter=16),  # 7.0M
    "densenet100_k24": dict(depth=100, growth_rate=24, nb_filter=16),  # 27.2M
    "densenet_bc100_k12": dict(depth=100, growth_rate=12, bottleneck=True, reduction=0.5),  # 0.8M
    "densenet_bc250_k24": dict(depth=250, growth_rate=24, bottleneck=True, reduction=0.5),  # 15.3M
    "densenet_bc190_k40": dict(depth=190, growth_rate=40, bottleneck=True, reduction=0.5),  # 25.6M
    # Wide-DenseNet-BC (the authors' README): shallow and wide, faster per parameter on GPUs.
    "wide_densenet_bc40_k36": dict(depth=40, growth_rate=36, bottleneck=True, reduction=0.5),
    "wide_densenet_bc40_k48": dict(depth=40, growth_rate=48, bottleneck=True, reduction=0.5),
    "wide_densenet_bc40_k60": dict(depth=40, growth_rate=60, bottleneck=True, reduction=0.5),
}
"""Keyword arguments of ``DenseNet`` for the paper's CIFAR networks (3 blocks, 3x3 stem)."""


def imagenet_architecture_name(nb_layers_per_block, growth_rate, nb_filter, bottleneck,
                               reduction, subsample_initial_block):
    """The name in ``IMAGENET_ARCHITECTURES`` of this configuration, or ``None``."""
    if not (bottleneck and subsample_initial_block and reduction == 0.5):
        return None
    for name, spec in IMAGENET_ARCHITECTURES.items():
        if spec == (tuple(nb_layers_per_block), growth_rate, nb_filter):
            return name
    return None
