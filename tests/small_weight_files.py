"""Small weight files of every format the loader reads, each written by its format's own
writer with random weights and BN statistics, and the ``DenseNet`` arguments that fit them.

``write(fmt, folder, poison=None)`` returns ``(path, arguments)``; ``poison``
``(value, where)`` puts ``value`` (NaN, inf) into the file's first element of the
stem convolution's kernel (``where="kernel"``) or of the stem BN's moving
variance (``where="variance"``), in the file's own layout. Every net has four
one-layer blocks (DenseNet-BC, ImageNet stem), so 32 px images go through.
"""

import os

import h5py
import numpy as np

from keras_densenet import DenseNet, weights

FORMATS = ("torch", "safetensors", "keras_applications", "original_keras", "keras_hub", "keras3")
CLASSES = 5
WHERE = {"kernel": "stem_conv/kernel", "variance": "stem_bn/moving_variance"}
"""Our name of each place ``poison`` can write to."""


def arguments(nb_filter, growth_rate):
    """``DenseNet`` arguments of the four one-layer blocks' DenseNet-BC."""
    return dict(nb_dense_block=4, nb_layers_per_block=[1, 1, 1, 1], growth_rate=growth_rate,
                nb_filter=nb_filter, bottleneck=True, reduction=0.5,
                subsample_initial_block=True, classes=CLASSES, activation=None)


def write(fmt, folder, poison=None):
    """A ``fmt`` file (or preset directory) in ``folder``; see the module docstring."""
    return {"torch": _torch, "safetensors": _torch, "keras_applications": _keras_applications,
            "original_keras": _original_keras, "keras_hub": _keras_hub,
            "keras3": _keras3}[fmt](fmt, str(folder), poison)


def _random(shape, rng, positive=False, fan_in=None):
    """Positive values near 1 (BN gamma and variance), He-scaled ones for a kernel of
    ``fan_in`` inputs, else small ones (BN beta and mean, biases)."""
    if positive:
        return rng.uniform(0.5, 1.5, shape).astype("float32")
    return rng.normal(0, np.sqrt(2.0 / fan_in) if fan_in else 0.1, shape).astype("float32")


def _randomize_keras(layers, seed=0):
    """Random weights (BN: gamma and moving variance positive) for Keras or tf_keras layers."""
    rng = np.random.default_rng(seed)
    for layer in layers:
        values = layer.get_weights()
        bn = len(values) == 4
        layer.set_weights([_random(v.shape, rng, bn and i in (0, 3),
                                   np.prod(v.shape[:-1]) if v.ndim > 1 else None)
                           for i, v in enumerate(values)])


def _poison_keras(conv, bn, poison):
    """``poison`` into a Keras / tf_keras stem ``conv`` or ``bn`` layer."""
    if poison is None:
        return
    value, where = poison
    layer, index = (conv, 0) if where == "kernel" else (bn, 3)
    values = layer.get_weights()
    values[index].flat[0] = value
    layer.set_weights(values)


def _torch(fmt, folder, poison):
    import torch

    from keras_densenet.apps.source_models import _torch_densenet

    state = _torch_densenet((1, 1, 1, 1), 8, 16, CLASSES).state_dict()
    norms = {key.rsplit(".", 1)[0] for key in state if key.endswith("running_var")}
    rng = np.random.default_rng(0)
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        if value.is_floating_point():
            positive = module in norms and leaf in ("weight", "running_var")
            fan_in = np.prod(value.shape[1:]) if value.ndim > 1 else None  # OIHW, (out, in)
            state[key] = torch.from_numpy(_random(tuple(value.shape), rng, positive, fan_in))
    if poison is not None:
        value, where = poison
        key = "features.conv0.weight" if where == "kernel" else "features.norm0.running_var"
        state[key].view(-1)[0] = value
    if fmt == "torch":
        path = os.path.join(folder, "small.pth")
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        path = os.path.join(folder, "small.safetensors")
        save_file({key: value.contiguous() for key, value in state.items()}, path)
    return path, arguments(16, 8)


def _keras_applications(fmt, folder, poison):
    from tf_keras.src.applications.densenet import DenseNet as TfKerasDenseNet

    model = TfKerasDenseNet([1, 1, 1, 1], weights=None, input_shape=(32, 32, 3),
                            classes=CLASSES, classifier_activation=None)
    _randomize_keras(model.layers)
    _poison_keras(model.get_layer("conv1/conv"), model.get_layer("conv1/bn"), poison)
    path = os.path.join(folder, "small_ka.h5")
    model.save_weights(path)
    return path, arguments(64, 32)


def _original_keras(fmt, folder, poison):
    import pytest
    import tf_keras

    import dataclasses

    from keras_densenet.apps import source_models

    small = dataclasses.replace(source_models.VARIANTS["densenet121"], name="small",
                                nb_layers_per_block=(1, 1, 1, 1), growth_rate=8, nb_filter=16)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(source_models.VARIANTS, "small", small)
        model = source_models.original_keras_densenet("small", input_shape=(32, 32, 3),
                                                      classes=CLASSES)
    _randomize_keras(model.layers)
    conv = next(l for l in model.layers if isinstance(l, tf_keras.layers.Conv2D))
    bn = next(l for l in model.layers if isinstance(l, tf_keras.layers.BatchNormalization))
    _poison_keras(conv, bn, poison)
    path = os.path.join(folder, "small_original.h5")
    model.save_weights(path)
    return path, arguments(16, 8)


def _keras_hub(fmt, folder, poison):
    import keras_hub

    backbone = keras_hub.models.DenseNetBackbone(stackwise_num_repeats=[1, 1, 1, 1],
                                                 growth_rate=8)
    classifier = keras_hub.models.DenseNetImageClassifier(backbone=backbone,
                                                          num_classes=CLASSES)
    _randomize_keras(classifier.layers + backbone.layers)
    _poison_keras(backbone.get_layer("conv1_conv"), backbone.get_layer("conv1_bn"), poison)
    path = os.path.join(folder, "small_preset")
    classifier.save_to_preset(path)
    return path, arguments(64, 8)


def _keras3(fmt, folder, poison):
    """Our own file; ``poison`` is written into the file afterwards and its digest
    recomputed, as one would who edits the arrays on purpose."""
    model = DenseNet(**arguments(16, 8), input_shape=(32, 32, 3))
    _randomize_keras(model.layers)
    path = os.path.join(folder, "small.weights.h5")
    weights.save_weights(model, path, bn_epsilon=1.001e-5, stem_padding="symmetric",
                         preprocessing="torch")
    if poison is not None:
        value, where = poison
        layer, index = ("stem_conv", 0) if where == "kernel" else ("stem_bn", 3)
        with h5py.File(path, "a") as h5:
            groups = weights.keras3._variable_groups(h5)
            group = next(g for g in groups.values() if g.attrs["name"] == layer)
            array = group[str(index)][()]
            array.flat[0] = value
            group[str(index)][...] = array
            h5.attrs[weights.keras3.DIGEST_ATTRIBUTE] = weights.keras3._digest(h5)
    return path, arguments(16, 8)
