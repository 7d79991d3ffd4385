"""memory_efficient=True: same outputs, gradients, BN statistics and weight files as the plain model."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_densenet import DenseNet, memory_efficient

BC = dict(depth=16, growth_rate=4, bottleneck=True, reduction=0.5, weight_decay=1e-4,
          input_shape=(32, 32, 3), classes=4)


def _pair(**overrides):
    config = {**BC, **overrides}
    plain = DenseNet(**config)
    efficient = DenseNet(**config, memory_efficient=True)
    efficient.set_weights(plain.get_weights())
    return plain, efficient


def _batch(images):
    return images(4, 32) / 255.0, np.array([0, 1, 2, 3])


def test_same_weighted_layers_and_recomputed_layers(images):
    plain, efficient = _pair()
    assert [w.path for w in efficient.weights] == [w.path for w in plain.weights]
    assert isinstance(efficient.get_layer("block2_layer1_bn1"), memory_efficient.BatchNormalization)
    assert isinstance(efficient.get_layer("block2_layer1_conv1"), memory_efficient.Conv2D)
    names = [layer.name for layer in efficient.layers]
    assert "block1_layer1_concat" not in names and "block1_layer1_relu1" not in names
    # one FeatureMoments per map that a later layer reads: 2 layers per block here
    assert [n for n in names if n.startswith("block1_moments")] == [
        "block1_moments0", "block1_moments1"]
    x, _ = _batch(images)
    np.testing.assert_allclose(efficient.predict(x, verbose=0), plain.predict(x, verbose=0),
                               atol=1e-6)


@pytest.mark.parametrize("bottleneck, depth", [(True, 16), (False, 13)])
def test_gradients_equal_the_plain_model(images, bottleneck, depth):
    plain, efficient = _pair(bottleneck=bottleneck, depth=depth)
    x, y = _batch(images)
    for expected, got, variable in zip(_gradients(plain, x, y), _gradients(efficient, x, y),
                                       plain.trainable_weights):
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=variable.path)


def _gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, model(x, training=True))) + tf.add_n(model.losses)
    return [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]


def test_one_train_step_updates_bn_statistics_once(images):
    """After one step every weight, moving statistics included, equals the plain model's."""
    plain, efficient = _pair()
    x, y = _batch(images)
    for model in (plain, efficient):
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        model.train_on_batch(x, y)
    moving_variance = efficient.get_layer("block1_layer2_bn1").moving_variance.numpy()
    assert not np.allclose(moving_variance, 1.0)  # it moved
    for got, expected in zip(efficient.weights, plain.weights):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5, err_msg=got.path)


@pytest.mark.parametrize("saved_flag", [False, True])
def test_weights_files_move_between_layouts(tmp_path, images, saved_flag):
    plain, efficient = _pair()
    x, _ = _batch(images)
    expected = plain.predict(x, verbose=0)
    path = str(tmp_path / "model.weights.h5")
    (efficient if saved_flag else plain).save_weights(path)
    for flag in (False, True):
        model = DenseNet(**BC, memory_efficient=flag)
        model.load_weights(path)
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
        np.testing.assert_allclose(DenseNet(**BC, memory_efficient=flag, weights=path).predict(
            x, verbose=0), expected, atol=1e-6)


@pytest.mark.parametrize("flag", [False, True])
def test_keras_file_round_trip(tmp_path, images, flag):
    model = _pair()[flag]
    x, _ = _batch(images)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("block1_layer1_bn1")) is type(model.get_layer("block1_layer1_bn1"))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


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
    conv = model.get_layer("block1_layer1_conv1")
    assert conv.compute_dtype == "float16" and conv.output.dtype == "float16"
    assert model.get_layer("block1_layer1_bn1").gamma.dtype == "float32"


def test_recomputed_conv_rejects_bias_and_activation():
    with pytest.raises(ValueError, match="use_bias=False"):
        memory_efficient.Conv2D(4, 1, use_bias=True)
    with pytest.raises(ValueError, match="activation=None"):
        memory_efficient.Conv2D(4, 1, use_bias=False, activation="relu")


BACKEND_SCRIPT = """
import numpy as np, keras
from keras_densenet import DenseNet
model = DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5,
                 input_shape=(16, 16, 3), classes=3, memory_efficient=True)
model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(6, 16, 16, 3)).astype("float32")
bn = model.get_layer("block1_layer1_bn1")
before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
loss = model.fit(x, np.array([0, 1, 2, 0, 1, 2]), epochs=1, batch_size=6, verbose=0).history["loss"][0]
after = keras.ops.convert_to_numpy(bn.moving_mean)
assert np.isfinite(loss) and not np.allclose(before, after)
# channels_first (which TensorFlow's CPU convolutions lack): one step matches the plain model
first = dict(depth=10, growth_rate=4, bottleneck=True, input_shape=(3, 16, 16), classes=3,
             data_format="channels_first")
plain, efficient = DenseNet(**first), DenseNet(**first, memory_efficient=True)
efficient.set_weights(plain.get_weights())
x = np.transpose(x, (0, 3, 1, 2))
for m in (plain, efficient):
    m.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    m.train_on_batch(x, np.array([0, 1, 2, 0, 1, 2]))
np.testing.assert_allclose(efficient.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5)
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
