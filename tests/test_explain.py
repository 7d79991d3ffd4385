"""Grad-CAM (keras_densenet.explain): equal to Selvaraju et al.'s recipe computed with a
gradient tape on the named layer, for a DenseNet and for transfer-learned wrappers, on all
three backends; the heatmaps' shape, range and classes; the overlay."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_densenet import DenseNet
from keras_densenet.explain import cam_models, grad_cam, heatmaps, jet, overlay
from keras_densenet.model import in_memory_mode

tf = pytest.importorskip("tensorflow")

TINY = dict(nb_dense_block=2, nb_layers_per_block=2, growth_rate=4, nb_filter=8, bottleneck=True,
            reduction=0.5)
SIZE = 32


def randomized(model, seed=0):
    """``model`` with every BN parameter and statistic and every bias random (kernels keep
    their random initialization)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        name = weight.path.rsplit("/", 1)[-1]
        if name in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))
        elif name in ("beta", "moving_mean", "bias"):
            weight.assign(rng.normal(0.0, 0.3, weight.shape))
    return model


def tiny(**overrides):
    return randomized(DenseNet(**{**TINY, "input_shape": (SIZE, SIZE, 3), "classes": 5,
                                  **overrides}))


def unit_range(maps):
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def tape_reference(activations_of, logits_of, x, class_index=None):
    """Selvaraju et al. with a ``tf.GradientTape`` watching the layer's activations:
    ``alpha = mean(d logit_c / dA)``, ``relu(sum_k alpha_k A_k)``, ``tf.image.resize``."""
    activations = tf.convert_to_tensor(activations_of(x))
    with tf.GradientTape() as tape:
        tape.watch(activations)
        logits = logits_of(activations)
        if class_index is None:
            class_index = tf.argmax(logits, axis=-1)
        score = tf.reduce_sum(tf.gather(logits, class_index, axis=1, batch_dims=1))
    alpha = tf.reduce_mean(tape.gradient(score, activations), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(alpha * activations, axis=-1, keepdims=True))
    return unit_range(tf.image.resize(cam, x.shape[1:3], method="bilinear")[..., 0].numpy())


def twin(model, **overrides):
    """``model``'s network (a ``tiny()``) with ``overrides`` (e.g. another top activation),
    holding its weights."""
    config = model.densenet_config["architecture"]
    copy = DenseNet(**{**TINY, "input_shape": tuple(config["input_shape"]),
                       "classes": config["classes"], "data_format": config["data_format"],
                       **overrides})
    copy.set_weights(model.get_weights())
    return copy


def logits_model(model):
    """The keras.io recipe's model: ``model`` with a linear top (same weights) mapping images
    to ``[final_relu activations, logits]``."""
    linear = twin(model, activation=None)
    return keras.Model(linear.input, [linear.get_layer("final_relu").output, linear.output])


def test_grad_cam_equals_a_gradient_tape_on_final_relu(images):
    model = tiny()
    x = images(3, SIZE) / 255.0
    probe = logits_model(model)
    with tf.GradientTape() as tape:  # through the whole network, as keras.io does
        activations, logits = probe(x)
        score = tf.reduce_sum(tf.gather(logits, tf.argmax(logits, -1), axis=1, batch_dims=1))
    alpha = tf.reduce_mean(tape.gradient(score, activations), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(alpha * activations, axis=-1, keepdims=True))
    expected = unit_range(tf.image.resize(cam, (SIZE, SIZE), "bilinear")[..., 0].numpy())
    maps = grad_cam(model, x)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert np.all(maps.min(axis=(1, 2)) == 0) and np.all(maps.max(axis=(1, 2)) == 1)
    models = cam_models(model)  # built once, for batch after batch
    # oneDNN picks kernels by batch size: batches of 1 and 2 differ from 3 in the last bits
    np.testing.assert_allclose(np.concatenate([heatmaps(models, x[:1]),
                                               heatmaps(models, x[1:])]), maps, atol=1e-6)


def test_the_score_is_the_logit_before_softmax_or_sigmoid(images):
    """The same weights under softmax, sigmoid and no activation give the same maps, and the
    gradient of the top Dense is its kernel: Grad-CAM here is CAM (Zhou et al.)."""
    x = images(2, SIZE) / 255.0
    logits = tiny(activation=None)
    by_activation = {activation: grad_cam(twin(logits, activation=activation), x,
                                          class_index=[1, 3])
                     for activation in ("softmax", "sigmoid")}
    expected = grad_cam(logits, x, class_index=[1, 3])
    for activation, maps in by_activation.items():
        np.testing.assert_allclose(maps, expected, atol=1e-6, err_msg=activation)
    features = keras.Model(logits.input, logits.get_layer("final_relu").output)
    kernel = keras.ops.convert_to_numpy(logits.get_layer("predictions").kernel)
    cam = np.maximum(np.einsum("bhwc,cb->bhw", features.predict(x, verbose=0),
                               kernel[:, [1, 3]]), 0)
    cam = keras.ops.convert_to_numpy(keras.ops.image.resize(cam[..., None], (SIZE, SIZE)))
    np.testing.assert_allclose(expected, unit_range(cam[..., 0]), atol=1e-5)


def test_class_index_none_int_or_one_per_image(images):
    model = tiny()
    x = images(3, SIZE) / 255.0
    top = np.argmax(model.predict(x, verbose=0), axis=-1)
    np.testing.assert_array_equal(grad_cam(model, x), grad_cam(model, x, class_index=top))
    np.testing.assert_array_equal(grad_cam(model, x, class_index=2),
                                  grad_cam(model, x, class_index=(2, 2, 2)))
    features = keras.Model(model.input, model.get_layer("final_relu").output)
    for class_index in ([0, 4, 1], np.array([3, 3, 0])):
        np.testing.assert_allclose(
            grad_cam(model, x, class_index=class_index),
            tape_reference(features, _linear_head(model), x, np.asarray(class_index)),
            atol=1e-5)
    message = r"class_index must be None, an int in \[0, 5\) or 3 such ints \(one per image\)"
    for bad in (5, -1, [0, 1], True, 1.0, "2", [0, 1, 7]):
        with pytest.raises(ValueError, match=message):
            grad_cam(model, x, class_index=bad)


def _linear_head(model):
    """``final_relu activations -> logits`` of a DenseNetModel, written out: global average
    pool, then the top's kernel and bias."""
    top = model.get_layer("predictions")
    return lambda a: tf.reduce_mean(a, axis=(1, 2)) @ top.kernel + top.bias


def test_a_transfer_learned_functional_wrapper(images):
    """A frozen backbone (no top, no pooling) after a Rescaling layer, called with
    training=False, then a new head: the layer inside the backbone is reached."""
    backbone = randomized(DenseNet(**TINY, include_top=False, input_shape=(SIZE, SIZE, 3)))
    backbone.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    features = backbone(keras.layers.Rescaling(1 / 255.0)(inputs), training=False)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    head = keras.layers.Dense(4, activation="softmax", bias_initializer="random_normal")
    model = keras.Model(inputs, head(keras.layers.Dropout(0.5)(pooled)))
    x = images(2, SIZE)
    trunk = keras.Model(backbone.input, backbone.get_layer("final_relu").output)
    expected = tape_reference(
        lambda pixels: trunk(pixels / 255.0),
        lambda a: tf.reduce_mean(a, axis=(1, 2)) @ head.kernel + head.bias, x)
    np.testing.assert_allclose(grad_cam(model, x), expected, atol=1e-5)
    _, linear_head, data_format = cam_models(model)
    assert data_format == "channels_last"
    assert [layer.__class__.__name__ for layer in linear_head.layers[1:]] == [
        "GlobalAveragePooling2D", "Dropout", "Dense"]
    assert linear_head.layers[-1].get_config()["activation"] == "linear"


def test_a_sequential_wrapper_with_a_pooling_backbone(images):
    backbone = randomized(DenseNet(**TINY, include_top=False, pooling="avg",
                                   input_shape=(SIZE, SIZE, 3)))
    head = keras.layers.Dense(3, activation="sigmoid", bias_initializer="random_normal")
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), backbone, head])
    x = images(2, SIZE) / 255.0
    trunk = keras.Model(backbone.input, backbone.get_layer("final_relu").output)
    expected = tape_reference(
        trunk, lambda a: tf.reduce_mean(a, axis=(1, 2)) @ head.kernel + head.bias, x, [2, 0])
    np.testing.assert_allclose(grad_cam(model, x, class_index=[2, 0]), expected, atol=1e-5)


def test_memory_efficient_modes_and_channels_first_give_the_same_maps(images):
    model = tiny()
    x = images(2, SIZE) / 255.0
    expected = grad_cam(model, x)
    full = in_memory_mode(model, "full")
    np.testing.assert_allclose(grad_cam(full, x), expected, atol=1e-5)
    first = DenseNet(**TINY, input_shape=(3, SIZE, SIZE), classes=5, data_format="channels_first")
    values = {weight.path: weight for weight in model.weights}
    for weight in first.weights:
        weight.assign(values[weight.path])
    np.testing.assert_allclose(grad_cam(first, x.transpose(0, 3, 1, 2)), expected, atol=1e-5)


def test_a_constant_map_is_zeros_and_other_sizes_are_resized(images):
    model = DenseNet(**TINY, classes=3)  # takes any size
    kernel = model.get_layer("predictions").kernel
    kernel.assign(np.zeros(kernel.shape))  # no gradient at all
    maps = grad_cam(model, images(2, 40) / 255.0)
    assert maps.shape == (2, 40, 40) and not np.isnan(maps).any()
    assert np.all(maps == 0)


def test_the_layer_the_config_records_is_taken(images):
    model = tiny()
    x = images(2, SIZE) / 255.0
    final = grad_cam(model, x)
    model.update_config(cam_layer="transition1_relu")
    np.testing.assert_array_equal(grad_cam(model, x),
                                  grad_cam(model, x, layer="transition1_relu"))
    assert np.abs(grad_cam(model, x) - final).max() > 0.1
    np.testing.assert_array_equal(grad_cam(model, x, layer="final_relu"), final)


def test_layer_errors_and_a_model_of_another_package(images):
    x = images(1, SIZE) / 255.0
    with pytest.raises(ValueError, match="layer='nope': no such layer in model"):
        grad_cam(tiny(), x, layer="nope")
    with pytest.raises(ValueError, match=r"images must be a batch .* got shape \(32, 32, 3\)"):
        grad_cam(tiny(), x[0])
    inputs = keras.Input((SIZE, SIZE, 3))
    activations = keras.layers.ReLU(name="act")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(activations))
    plain = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="records no cam_layer; pass layer=NAME"):
        grad_cam(plain, x)
    assert grad_cam(plain, x, layer="act").shape == (1, SIZE, SIZE)
    trunk = keras.Model(inputs, activations)
    dense = plain.layers[-1]
    np.testing.assert_allclose(
        grad_cam(plain, x, layer="act"),
        tape_reference(trunk, lambda a: tf.reduce_mean(a, axis=(1, 2)) @ dense.kernel
                       + dense.bias, x), atol=1e-5)


def test_overlay_blends_the_jet_colours():
    np.testing.assert_allclose(jet([0.0, 0.5, 1.0]), [[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]])
    image = np.full((4, 6, 3), 200, dtype="uint8")
    heatmap = np.zeros((4, 6), dtype="float32")
    heatmap[:, 3:] = 1.0
    blended = overlay(image, heatmap, opacity=0.5)
    assert blended.shape == (4, 6, 3) and blended.dtype == np.uint8
    assert blended[0, 0].tolist() == [100, 100, 164] and blended[0, 5].tolist() == [164, 100, 100]
    np.testing.assert_array_equal(overlay(image, heatmap, opacity=0.0), image)
    gray = overlay(np.full((4, 6), 200, dtype="uint8"), heatmap, opacity=0.5)
    np.testing.assert_array_equal(gray, blended)
    with pytest.raises(ValueError, match=r"heatmap \(4, 5\) must have the image's height and"):
        overlay(image, heatmap[:, :5])
    with pytest.raises(ValueError, match="image must be uint8"):
        overlay(image.astype("float32"), heatmap)
    with pytest.raises(ValueError, match=r"opacity must be a finite number in \[0, 1\]"):
        overlay(image, heatmap, opacity=1.5)


BACKEND_SCRIPT = """
import sys
import keras
import numpy as np
from keras_densenet.explain import grad_cam

folder = sys.argv[1]
x = np.load(folder + "/inputs.npz")["x"]
out = {}
for name in ("densenet", "wrapper"):
    model = keras.models.load_model(f"{folder}/{name}.keras")
    out[name] = grad_cam(model, x)
    out[name + "_class_2"] = grad_cam(model, x, class_index=2)
np.savez(f"{folder}/{keras.backend.backend()}.npz", **out)
print("ok", keras.backend.backend())
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_jax_and_torch_give_tensorflows_maps(backend, images, tmp_path):
    """A DenseNet and a functional wrapper saved here (.keras), loaded by the other backend
    in its own process: its autodiff (jax.vjp, torch.autograd) gives TensorFlow's maps."""
    pytest.importorskip(backend)
    x = images(2, SIZE) / 255.0
    np.savez(tmp_path / "inputs.npz", x=x)
    densenet = tiny()
    backbone = randomized(DenseNet(**TINY, include_top=False, input_shape=(SIZE, SIZE, 3)), 1)
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    wrapper = keras.Model(inputs, keras.layers.Dense(3, activation="softmax",
                                                     bias_initializer="random_normal")(pooled))
    expected = {}
    for name, model in (("densenet", densenet), ("wrapper", wrapper)):
        model.save(tmp_path / f"{name}.keras")
        expected[name] = grad_cam(model, x)
        expected[name + "_class_2"] = grad_cam(model, x, class_index=2)
    result = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, str(tmp_path)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ok {backend}" in result.stdout
    got = np.load(tmp_path / f"{backend}.npz")
    for name, maps in expected.items():
        np.testing.assert_allclose(got[name], maps, atol=1e-4, err_msg=name)
