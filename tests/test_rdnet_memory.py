"""RDNet's memory_efficient=True and "full": the plain RDNet's layers, outputs, gradients, files."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_densenet.rdnet import RDNetTiny, RecomputedSequence
from test_memory_efficient import _ancestors, _gradient_graph, _recomputed_concatenations

MODES = (True, "full")
SMALL = dict(input_shape=(32, 32, 3), classes=4)


def _randomize(model, seed=0):
    """Every weight random (layer scales and LayerNorms included, so every block counts)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        scale = 1 / np.sqrt(np.prod(weight.shape[:-1])) if len(weight.shape) > 1 else 0.3
        weight.assign(rng.normal(size=weight.shape) * scale + (1.0 if "gamma" in weight.path
                                                                else 0.0))


def _copy_weights(source, target):
    values = {w.path: w.numpy() for w in source.weights}
    for w in target.weights:
        w.assign(values[w.path])


@pytest.fixture(scope="module")
def models():
    """``{mode: RDNet-Tiny at 32 px}`` for False, True and "full", with the same random weights."""
    built = {mode: RDNetTiny(**SMALL, memory_efficient=mode) for mode in (False, *MODES)}
    _randomize(built[False])
    for mode in MODES:
        _copy_weights(built[False], built[mode])
    return built


def _batch():
    rng = np.random.default_rng(1)
    return rng.normal(size=(2, 32, 32, 3)).astype("float32"), np.array([0, 3])


def _weights_by_class(model):
    """``{class name: [weight paths in layer order]}``: what ``save_weights`` files go by."""
    by_class = {}
    for layer in model.layers:
        by_class.setdefault(type(layer).__name__, []).extend(w.path for w in layer.weights)
    return {name: paths for name, paths in by_class.items() if paths}


def _relative(got, expected):
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("mode", MODES)
def test_same_weighted_layers_names_and_outputs(models, mode):
    plain, model = models[False], models[mode]
    assert _weights_by_class(model) == _weights_by_class(plain)
    assert [w.path for w in model.weights] == [w.path for w in plain.weights]
    names = {layer.name for layer in model.layers}
    recomputed = {layer.name for layer in model.layers if isinstance(layer, RecomputedSequence)}
    blocks = {f"stage{i}_block{j}_recomputed" for i in range(7) for j in range(3)}
    extra = {"stem"} | {f"stage{i}_transition" for i in range(1, 7)} if mode == "full" else set()
    assert recomputed == blocks | extra
    assert "stage0_block0_gelu" not in names and "stage3_block0_se_gate" not in names
    assert ("stage1_transition_norm" in names) and (
        isinstance(model.get_layer("stage1_transition_conv"), keras.layers.Conv2D))
    for level in plain.densenet_config["pyramid"].values():  # the pyramid's layers are there
        assert model.get_layer(level).output.shape == plain.get_layer(level).output.shape
    assert model.densenet_config["memory_efficient"] == mode
    assert plain.densenet_config["memory_efficient"] is False
    x, _ = _batch()
    expected = plain.predict(x, verbose=0)
    assert _relative(model.predict(x, verbose=0), expected) < 1e-5


def _gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, model(x, training=True), from_logits=True))
    gradients = tape.gradient(loss, model.trainable_weights)
    return {w.path: g.numpy() for w, g in zip(model.trainable_weights, gradients)}


def test_gradients_and_one_sgd_step_equal_the_plain_models(models):
    x, y = _batch()
    expected = _gradients(models[False], x, y)
    for mode in MODES:
        got = _gradients(models[mode], x, y)
        for path, gradient in expected.items():
            assert np.abs(gradient).max() > 0, path  # every weight takes part
            np.testing.assert_allclose(got[path], gradient, rtol=1e-4,
                                       atol=1e-5 * np.abs(gradient).max(), err_msg=(mode, path))
    initial = {w.path: w.numpy() for w in models[False].weights}
    try:
        for model in models.values():
            model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
                from_logits=True))
            model.train_on_batch(x, y)
        after = {w.path: w.numpy() for w in models[False].weights}
        assert not np.allclose(after["stage6_block2_conv2/kernel"],
                               initial["stage6_block2_conv2/kernel"])
        for mode in MODES:
            for weight in models[mode].weights:
                np.testing.assert_allclose(weight.numpy(), after[weight.path], rtol=1e-4,
                                           atol=1e-6, err_msg=(mode, weight.path))
    finally:  # the other tests start from the same weights
        for model in models.values():
            for weight in model.weights:
                weight.assign(initial[weight.path])


@pytest.mark.parametrize("mode", MODES)
def test_recomputations_wait_for_the_backward_pass(models, mode):
    """Each recomputed block (and in "full" each transition and the stem) rebuilds its input
    from its maps once the loss's gradient exists: else TensorFlow would run it in the forward
    pass and hold its intermediates, saving nothing."""
    nodes = _gradient_graph(models[mode], (None, 32, 32, 3))
    recomputed = _recomputed_concatenations(nodes)
    assert len(recomputed) == 21 + (7 if mode == "full" else 0)
    ancestors = _ancestors(nodes)
    for names in recomputed.values():
        assert any(a.startswith("gradient_tape/") for name in names for a in ancestors(name))


def test_weight_files_and_keras_files_load_in_every_mode(models, tmp_path):
    x, _ = _batch()
    expected = models[False].predict(x, verbose=0)
    for saved_mode, mode in ((False, "full"), ("full", True), (True, False)):
        path = str(tmp_path / f"{saved_mode}.weights.h5")
        models[saved_mode].save_weights(path)
        model = RDNetTiny(**SMALL, memory_efficient=mode, weights=path)
        assert _relative(model.predict(x, verbose=0), expected) < 1e-5, (saved_mode, mode)
    path = str(tmp_path / "full.keras")
    models["full"].save(path)
    loaded = keras.models.load_model(path)
    assert loaded.densenet_config["memory_efficient"] == "full"
    for name in ("stem", "stage1_transition", "stage0_block0_recomputed"):
        assert isinstance(loaded.get_layer(name), RecomputedSequence)
    assert type(loaded.get_layer("stage0_block0_conv1")) is type(
        models["full"].get_layer("stage0_block0_conv1"))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0),
                                  models["full"].predict(x, verbose=0))
    models[False].load_weights(path)  # a .keras file's weights load into the plain layout
    assert _relative(models[False].predict(x, verbose=0), expected) < 1e-5


def test_drop_path_drops_whole_samples_in_training():
    model = RDNetTiny(**SMALL, drop_path_rate=0.5, memory_efficient=True)
    last = model.get_layer("stage6_block2_drop_path")  # rate 0.5: kept samples doubled
    assert isinstance(last.input._keras_history.operation, RecomputedSequence)
    probe = keras.Model(model.input, [last.input, last.output])
    x = np.random.default_rng(1).normal(size=(16, 32, 32, 3)).astype("float32")
    before, after = (keras.ops.convert_to_numpy(t) for t in probe(x, training=True))
    dropped = [bool(np.all(sample == 0)) for sample in after]
    assert any(dropped) and not all(dropped)
    np.testing.assert_allclose(after[~np.array(dropped)], 2 * before[~np.array(dropped)],
                               rtol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True))
    gradient = tape.gradient(loss, model.get_layer("stage6_block2_conv2").weights[0])
    assert np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).max() > 0


@pytest.mark.parametrize("value", ["on", 1, None])
def test_rejects_other_values(value):
    with pytest.raises(ValueError, match="memory_efficient must be one of"):
        RDNetTiny(**SMALL, memory_efficient=value)
    with pytest.raises(ValueError, match="steps must be among"):
        RecomputedSequence(["conv", "relu"])


BACKEND_SCRIPT = """
import numpy as np, keras
from keras_densenet.rdnet import RDNetTiny
x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype("float32")
y = np.array([0, 3])
plain = RDNetTiny(input_shape=(3, 32, 32), classes=4, data_format="channels_first")
rng = np.random.default_rng(1)
values = {w.path: rng.normal(size=w.shape).astype("float32") * 0.1 for w in plain.weights}
for mode in (False, True, "full"):
    model = plain if mode is False else RDNetTiny(input_shape=(3, 32, 32), classes=4,
                                                  data_format="channels_first",
                                                  memory_efficient=mode)
    for w in model.weights:
        w.assign(values[w.path])
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)
    after = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    if mode is False:
        expected = after
    for path, value in after.items():
        np.testing.assert_allclose(value, expected[path], rtol=1e-4, atol=1e-6, err_msg=path)
    assert any(not np.allclose(after[p], values[p]) for p in after)
print("ok", keras.backend.backend())
"""


@pytest.mark.slow
def test_torch_trains_the_same_step():
    """On PyTorch (keras.remat, channels first) one SGD step equals the plain model's."""
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "torch"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok torch" in result.stdout


def test_gelu_and_its_written_out_gradient_are_tensorflows_exact_gelu():
    from keras_densenet.rdnet import gelu_erf

    x = tf.constant(np.linspace(-8, 8, 161), "float32")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, reference = gelu_erf(x), tf.nn.gelu(x, approximate=False)
    np.testing.assert_allclose(ours, reference, atol=2e-6)
    np.testing.assert_allclose(tape.gradient(ours, x), tape.gradient(reference, x), atol=1e-6)
