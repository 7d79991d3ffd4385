"""Precise BN: the moving statistics recomputed as the true moments of each BN layer's inputs."""

import keras
import numpy as np
import pytest

from keras_densenet import DenseNet
from keras_densenet.apps import precise_bn

TINY = dict(depth=10, growth_rate=4, bottleneck=True, reduction=0.5, input_shape=(8, 8, 3),
            classes=3)


def _batches(count=3, size=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(2.0, 3.0, (size, 8, 8, 3)).astype("float32") for _ in range(count)]


def test_the_first_layer_gets_the_moments_of_all_the_images():
    """The first BN normalizes the stem convolution's output: its statistics must be the
    mean and biased variance over every image, not a moving average."""
    model = DenseNet(**TINY)
    batches = _batches(3, size=5) + _batches(1, size=2, seed=1)  # and a partial batch
    precise_bn.recompute_population_statistics(model, batches)
    conv, bn = model.get_layer("stem_conv"), model.get_layer("block1_layer1_bn1")
    features = np.concatenate([keras.ops.convert_to_numpy(conv(b)) for b in batches])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean),
                               features.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance),
                               features.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)
    assert bn.momentum == 0.99  # restored


@pytest.mark.parametrize("memory_efficient", [False, True, "full"])
def test_every_memory_mode_gets_the_same_statistics(memory_efficient):
    """The memory-efficient modes' BN subclasses update their statistics in their own
    code: all three modes must end with the plain model's statistics."""
    reference = DenseNet(**TINY)
    model = DenseNet(**TINY, memory_efficient=memory_efficient)
    weights = {v.path: v for v in reference.weights}
    for variable in model.weights:  # by path: "full" orders its variables otherwise
        variable.assign(weights[variable.path])
    batches = _batches()
    for net in (reference, model):
        precise_bn.recompute_population_statistics(net, batches)
    assert len(precise_bn.batch_norm_layers(model)) == len(
        precise_bn.batch_norm_layers(reference)) > 5
    statistics = {v.path: keras.ops.convert_to_numpy(v) for v in reference.weights
                  if "moving" in v.path}
    for variable in model.weights:
        if "moving" in variable.path:
            np.testing.assert_allclose(keras.ops.convert_to_numpy(variable),
                                       statistics[variable.path], rtol=2e-3, atol=1e-4)
    # computed over one batch, the statistics make inference that batch's training pass
    images = np.concatenate(batches)
    precise_bn.recompute_population_statistics(model, [images])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images, training=False)),
                               keras.ops.convert_to_numpy(model(images, training=True)),
                               atol=1e-4)


def test_weights_and_frozen_layers_are_untouched():
    model = DenseNet(**TINY)
    frozen = precise_bn.batch_norm_layers(model)[0]
    frozen.trainable = False
    kept = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights
            if "moving" not in v.path or v.path.startswith(frozen.path)}
    precise_bn.recompute_population_statistics(model, _batches())
    for variable in model.weights:
        if variable.path in kept:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable),
                                          kept[variable.path])
    assert frozen not in precise_bn.batch_norm_layers(model)


def test_the_callback_settles_only_after_training_steps():
    model = DenseNet(**TINY)
    model.compile("sgd", "sparse_categorical_crossentropy")
    callback = precise_bn.PreciseBatchNorm(_batches())
    callback.set_model(model)
    before = keras.ops.convert_to_numpy(precise_bn.batch_norm_layers(model)[0].moving_mean)
    callback.on_test_begin()  # nothing trained yet: statistics kept
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(precise_bn.batch_norm_layers(model)[0].moving_mean), before)
    callback.on_train_batch_end(0)
    callback.on_test_begin()
    assert not np.allclose(
        keras.ops.convert_to_numpy(precise_bn.batch_norm_layers(model)[0].moving_mean), before)
    assert not callback.stale
