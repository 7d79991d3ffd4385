"""memory_efficient=True: same outputs, gradients, BN statistics and weights as the plain model."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_densenet import DenseNet
from keras_densenet.memory_efficient import transfer_weights, weighted_layers

BC = dict(depth=16, growth_rate=4, bottleneck=True, reduction=0.5, weight_decay=1e-4,
          input_shape=(32, 32, 3), classes=4)


def _pair(**overrides):
    config = {**BC, **overrides}
    plain = DenseNet(**config)
    efficient = DenseNet(**config, memory_efficient=True)
    transfer_weights(plain, efficient)
    return plain, efficient


def _batch(images):
    return images(4, 32) / 255.0, np.array([0, 1, 2, 3])


def test_layer_names_are_kept(images):
    plain, efficient = _pair()
    assert sorted(weighted_layers(plain)) == sorted(weighted_layers(efficient))
    assert efficient.get_layer("block1_layer2_recomputed").bn.name == "block1_layer2_bn1"


@pytest.mark.parametrize("bottleneck, depth", [(True, 16), (False, 13)])
def test_gradients_equal_the_plain_model(images, bottleneck, depth):
    plain, efficient = _pair(bottleneck=bottleneck, depth=depth)
    x, y = _batch(images)
    expected = _gradients_by_layer(plain, x, y)
    got = _gradients_by_layer(efficient, x, y)
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5, err_msg=str(key))


def _gradients_by_layer(model, x, y):
    layers = list(weighted_layers(model).values())
    variables = [v for layer in layers for v in layer.trainable_weights]
    keys = [(layer.name, i) for layer in layers for i in range(len(layer.trainable_weights))]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, model(x, training=True))) + tf.add_n(model.losses)
    return {k: g.numpy() for k, g in zip(keys, tape.gradient(loss, variables))}


def test_fit_updates_bn_statistics_once_per_step(images):
    plain, efficient = _pair()
    x, y = _batch(images)
    for model in (plain, efficient):
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    plain_layers = weighted_layers(plain)
    for name, layer in weighted_layers(efficient).items():
        for got, expected in zip(layer.get_weights(), plain_layers[name].get_weights()):
            np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(efficient.predict(x, verbose=0), plain.predict(x, verbose=0),
                               atol=1e-5)


def test_weights_files_move_between_layouts(tmp_path, images):
    plain, efficient = _pair()
    x, _ = _batch(images)
    expected = plain.predict(x, verbose=0)
    plain_file, efficient_file = str(tmp_path / "p.weights.h5"), str(tmp_path / "e.weights.h5")
    plain.save_weights(plain_file)
    efficient.save_weights(efficient_file)
    for path in (plain_file, efficient_file):
        for flag in (False, True):
            model = DenseNet(**BC, memory_efficient=flag, weights=path)
            np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)


def test_keras_file_round_trip(tmp_path, images):
    _, efficient = _pair()
    x, _ = _batch(images)
    path = str(tmp_path / "e.keras")
    efficient.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), efficient.predict(x, verbose=0))


def test_mixed_precision_training(images):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = DenseNet(**BC, memory_efficient=True)
        model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        x, y = _batch(images)
        history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history.history["loss"][0])
    assert model.get_layer("block1_layer1_recomputed").conv.compute_dtype == "float16"


BACKEND_SCRIPT = """
import numpy as np, keras
from keras_densenet import DenseNet
model = DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5,
                 input_shape=(16, 16, 3), classes=3, memory_efficient=True)
model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(6, 16, 16, 3)).astype("float32")
before = model.get_layer("block1_layer1_recomputed").bn.moving_mean.numpy().copy()
loss = model.fit(x, np.array([0, 1, 2, 0, 1, 2]), epochs=1, batch_size=6, verbose=0).history["loss"][0]
after = model.get_layer("block1_layer1_recomputed").bn.moving_mean.numpy()
assert np.isfinite(loss) and not np.allclose(before, after)
print("ok", keras.backend.backend())
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_train(backend):
    pytest.importorskip(backend)
    result = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT], capture_output=True,
                            text=True, timeout=240,
                            env={**os.environ, "KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ok {backend}" in result.stdout
