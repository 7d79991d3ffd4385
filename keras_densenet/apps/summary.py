"""``keras-densenet summary``: the parameter count of every preset, as a table.

The counts are computed from the architecture (``trainable_parameters``), not
by building the models, so the table prints at once; the tests check the
formula against ``model.count_params()`` of built models.
"""

import argparse

from keras_densenet.architectures import ARCHITECTURE_FIELDS, BOTTLENECK_WIDTH, VARIANTS

USES_FRAMEWORK = False  # the CLI need not start Keras for this command
HEADER = ("preset", "input", "classes", "trainable params")


def trainable_parameters(nb_layers_per_block, growth_rate, nb_filter, bottleneck=False,
                         reduction=0.0, subsample_initial_block=False, include_top=True,
                         classes=1000, stem_type="standard", anti_alias=False,
                         input_channels=3):
    """Trainable scalars of a DenseNet: conv kernels (no bias), BN gamma and beta, classifier.

    Arguments are ``DenseNet``'s (``nb_layers_per_block`` one count per block,
    ``nb_filter`` resolved). Equals ``sum of trainable weight sizes`` of the
    built model; BN moving statistics are not trainable and not counted, nor is
    ``anti_alias``'s fixed blur filter.
    """

    def conv(size, channels_in, channels_out):
        return size * size * channels_in * channels_out

    def bn(channels):
        return 2 * channels

    if not subsample_initial_block:
        total = conv(3, input_channels, nb_filter)  # CIFAR stem: one 3x3 conv, no BN
    elif stem_type == "deep":
        half = nb_filter // 2
        total = (conv(3, input_channels, half) + bn(half) + conv(3, half, half) + bn(half)
                 + conv(3, half, nb_filter) + bn(nb_filter))
    else:
        total = conv(7, input_channels, nb_filter) + bn(nb_filter)
    channels = nb_filter
    for index, nb_layers in enumerate(nb_layers_per_block):
        for _ in range(nb_layers):
            if bottleneck:
                width = BOTTLENECK_WIDTH * growth_rate
                total += bn(channels) + conv(1, channels, width) + bn(width)
                total += conv(3, width, growth_rate)
            else:
                total += bn(channels) + conv(3, channels, growth_rate)
            channels += growth_rate
        if index < len(nb_layers_per_block) - 1:
            compressed = int(channels * (1.0 - reduction))
            total += bn(channels) + conv(1, channels, compressed)
            channels = compressed
    total += bn(channels)  # final_bn
    if include_top:
        total += channels * classes + classes
    return total


def preset_table(names=None):
    """Rows of ``(preset, input, classes, trainable parameters)`` of ``architectures.VARIANTS``
    (all, or those in ``names``), ImageNet variants first."""
    return [(name, "x".join(map(str, variant.input_shape)), variant.classes,
             trainable_parameters(**_architecture(variant), classes=variant.classes))
            for name, variant in VARIANTS.items() if names is None or name in names]


def _architecture(variant):
    return {field: getattr(variant, field) for field in ARCHITECTURE_FIELDS}


def format_table(rows):
    """The rows as aligned text: columns as wide as their longest entry, numbers right-aligned."""
    cells = [HEADER] + [(name, shape, str(classes), f"{params:,}")
                        for name, shape, classes, params in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(HEADER))]
    lines = []
    for row in cells:
        left = [cell.ljust(width) for cell, width in zip(row[:2], widths)]
        right = [cell.rjust(width) for cell, width in zip(row[2:], widths[2:])]
        lines.append("  ".join(left + right).rstrip())
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("presets", nargs="*", help="presets to show (default: all)")
    return parser


def run(args):
    known = list(VARIANTS)
    unknown = sorted(set(args.presets) - set(known))
    if unknown:
        raise ValueError(f"unknown presets {unknown}; choose from {known}")
    print(format_table(preset_table(args.presets or None)))
    return 0


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
