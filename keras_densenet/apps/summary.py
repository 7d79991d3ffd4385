"""``keras-densenet summary``: the parameter count of every preset, as a table."""

import argparse
import math

from keras_densenet.architectures import CIFAR_PRESETS, IMAGENET_ARCHITECTURES
from keras_densenet.presets import DenseNetCIFAR, DenseNetImageNet


def trainable_parameters(model):
    """Number of trainable scalars (conv kernels, BN gamma/beta, classifier)."""
    return sum(int(math.prod(w.shape)) for w in model.trainable_weights)


def preset_table(names=None):
    """Rows of ``(preset, input, classes, trainable parameters)``."""
    rows = []
    for name in IMAGENET_ARCHITECTURES:
        if names is None or name in names:
            model = DenseNetImageNet(name, input_shape=(224, 224, 3))
            rows.append((name, "224x224x3", 1000, trainable_parameters(model)))
    for name in CIFAR_PRESETS:
        if names is None or name in names:
            model = DenseNetCIFAR(name)
            rows.append((name, "32x32x3", 10, trainable_parameters(model)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="keras-densenet summary", description=__doc__)
    parser.add_argument("presets", nargs="*", help="presets to show (default: all)")
    args = parser.parse_args(argv)
    known = set(IMAGENET_ARCHITECTURES) | set(CIFAR_PRESETS)
    unknown = set(args.presets) - known
    if unknown:
        parser.error(f"unknown presets {sorted(unknown)}; choose from {sorted(known)}")
    print(f"{'preset':<22}{'input':<12}{'classes':>8}{'trainable params':>20}")
    for name, shape, classes, params in preset_table(args.presets or None):
        print(f"{name:<22}{shape:<12}{classes:>8}{params:>20,}")
    return 0
