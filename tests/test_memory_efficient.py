"""memory_efficient=True and "full": the plain model's outputs, gradients, BN statistics, weight files."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_densenet import DenseNet, memory_efficient
from keras_densenet.memory_modes import training_state

BC = dict(depth=16, growth_rate=4, bottleneck=True, reduction=0.5, weight_decay=1e-4,
          input_shape=(32, 32, 3), classes=4)
MODES = (True, "full")


def _pair(mode=True, **overrides):
    """A plain model and one with ``memory_efficient=mode``, with the same weights."""
    config = {**BC, **overrides}
    plain = DenseNet(**config)
    efficient = DenseNet(**config, memory_efficient=mode)
    _copy_weights(plain, efficient)
    return plain, efficient


def _copy_weights(source, target):
    """By variable path: ``"full"`` lists a layer's conv2 before its bn2."""
    values = {w.path: w.numpy() for w in source.weights}
    for w in target.weights:
        w.assign(values[w.path])


def _weights_by_class(model):
    """``{class name: [weight paths in layer order]}``: what ``save_weights`` files go by."""
    by_class = {}
    for layer in model.layers:
        by_class.setdefault(type(layer).__name__, []).extend(w.path for w in layer.weights)
    return {name: paths for name, paths in by_class.items() if paths}


def _concatenations(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]


def _batch(images, size=32):
    return images(4, size) / 255.0, np.array([0, 1, 2, 3])


def test_same_weighted_layers_and_recomputed_layers(images):
    plain, efficient = _pair()
    assert [w.path for w in efficient.weights] == [w.path for w in plain.weights]
    assert isinstance(efficient.get_layer("block2_layer1_bn1"), memory_efficient.ConcatenationBatchNorm)
    assert isinstance(efficient.get_layer("block2_layer1_conv1"), memory_efficient.RecomputedConv)
    names = [layer.name for layer in efficient.layers]
    assert "block1_layer1_relu1" not in names
    # the plain model's concatenations (not stored for the backward pass: see
    # test_recomputation_waits_for_the_backward_pass)
    assert _concatenations(efficient) == _concatenations(plain)
    # one FeatureMoments per map that a later layer reads: 2 layers per block here
    assert [n for n in names if n.startswith("block1_moments")] == [
        "block1_moments0", "block1_moments1"]
    x, _ = _batch(images)
    np.testing.assert_allclose(efficient.predict(x, verbose=0), plain.predict(x, verbose=0),
                               atol=1e-6)


def test_full_mode_layers(images):
    plain, full = _pair("full")
    assert _weights_by_class(full) == _weights_by_class(plain)
    assert sorted(w.path for w in full.weights) == sorted(w.path for w in plain.weights)
    assert isinstance(full.get_layer("block2_layer1_bn1"), memory_efficient.ConcatenationBatchNorm)
    assert isinstance(full.get_layer("block2_layer1_bn2"),
                      memory_efficient.RecomputedDenseLayer)
    for conv in ("conv1", "conv2"):
        assert isinstance(full.get_layer(f"block2_layer1_{conv}"), memory_efficient.KernelConv2D)
    assert isinstance(full.get_layer("transition1_bn"), memory_efficient.ConcatenationBatchNorm)
    assert isinstance(full.get_layer("transition1_conv"), memory_efficient.RecomputedConv)
    names = [layer.name for layer in full.layers]
    assert not [n for n in names if "relu" in n and not n.startswith("final")]
    assert _concatenations(full) == _concatenations(plain)
    x, _ = _batch(images)
    np.testing.assert_allclose(full.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-6)


IMAGENET_STEM = dict(nb_dense_block=3, nb_layers_per_block=[2, 2, 1], growth_rate=4,
                     nb_filter=8, bottleneck=True, reduction=0.5, weight_decay=1e-4,
                     subsample_initial_block=True, input_shape=(64, 64, 3), classes=4)


STEMS = {  # the plain stem's layers that "full" has not (all recomputed), and its computing BN
    ("symmetric", "standard", False): ({"stem_pad", "stem_relu", "stem_pool_pad", "stem_pool"},
                                       "stem_bn"),
    ("same", "standard", False): ({"stem_relu", "stem_pool"}, "stem_bn"),
    ("symmetric", "standard", True): ({"stem_pad", "stem_relu", "stem_pool_pad", "stem_pool",
                                       "stem_blur"}, "stem_bn"),
    ("symmetric", "deep", False): ({"stem_relu1", "stem_relu2", "stem_relu3", "stem_pool_pad",
                                    "stem_pool"}, "stem_bn3"),
    ("same", "deep", True): ({"stem_relu1", "stem_relu2", "stem_relu3", "stem_pool",
                              "stem_blur"}, "stem_bn3"),
}


@pytest.mark.parametrize("stem_padding, stem_type, anti_alias", list(STEMS))
def test_full_mode_recomputes_the_imagenet_stem(tmp_path, images, stem_padding, stem_type,
                                                anti_alias):
    """stem_bn recomputes the stem (conv-BN-ReLU-max pool, or the deep stem's last BN-ReLU-pool,
    blur-pooled or not): same outputs, gradients, statistics."""
    config = dict(IMAGENET_STEM, stem_padding=stem_padding, stem_type=stem_type,
                  anti_alias=anti_alias)
    plain = DenseNet(**config)
    full = DenseNet(**config, memory_efficient="full")
    _copy_weights(plain, full)
    recomputed_layers, stem_bn = STEMS[stem_padding, stem_type, anti_alias]
    names = {layer.name for layer in full.layers}
    assert recomputed_layers <= {layer.name for layer in plain.layers}
    assert not recomputed_layers & names
    assert isinstance(full.get_layer(stem_bn), memory_efficient.RecomputedStem)
    if stem_type == "deep":
        for index in (1, 2):
            assert isinstance(full.get_layer(f"stem_bn{index}"), memory_efficient.ConcatenationBatchNorm)
            assert isinstance(full.get_layer(f"stem_conv{index + 1}"), memory_efficient.RecomputedConv)
    else:
        assert isinstance(full.get_layer("stem_conv"), memory_efficient.KernelConv2D)
    assert _weights_by_class(full) == _weights_by_class(plain)
    x, y = _batch(images, 64)
    np.testing.assert_allclose(full.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-6)
    got = _gradients(full, x, y)
    for path, expected in _gradients(plain, x, y).items():
        np.testing.assert_allclose(got[path], expected, atol=1e-5, err_msg=path)
    for model in (plain, full):
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        model.train_on_batch(x, y)
    assert not np.allclose(full.get_layer(stem_bn).moving_variance.numpy(), 1.0)
    expected = {w.path: w.numpy() for w in plain.weights}
    for weight in full.weights:
        np.testing.assert_allclose(weight.numpy(), expected[weight.path], atol=1e-5,
                                   err_msg=weight.path)
    full.save(tmp_path / "full.keras")
    loaded = keras.models.load_model(tmp_path / "full.keras")
    assert loaded.get_layer(stem_bn).pool_padding == stem_padding
    assert loaded.get_layer(stem_bn).anti_alias == anti_alias
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), full.predict(x, verbose=0))


def test_stem_of_0_2_0_files(tmp_path, images):
    """0.2.0's "full" stem (a plain stem_conv, stem_bn on its output) computes and loads as before."""
    full = DenseNet(**IMAGENET_STEM, memory_efficient="full")
    image = keras.Input((64, 64, 3))
    conv = keras.layers.Conv2D(8, 7, strides=2, use_bias=False, name="stem_conv")(
        keras.layers.ZeroPadding2D(3, name="stem_pad")(image))
    old = keras.Model(image, memory_efficient.RecomputedStem(
        epsilon=full.get_layer("stem_bn").epsilon, name="stem_bn")(conv))
    for name in ("stem_conv", "stem_bn"):
        old.get_layer(name).set_weights(full.get_layer(name).get_weights())
    stem = keras.Model(full.input, full.get_layer("stem_bn").output)
    x, _ = _batch(images, 64)
    np.testing.assert_allclose(old.predict(x, verbose=0), stem.predict(x, verbose=0), atol=1e-6)
    old.save(tmp_path / "old.keras")
    loaded = keras.models.load_model(tmp_path / "old.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), old.predict(x, verbose=0))
    loaded.compile(keras.optimizers.SGD(0.1), "mse")
    loaded.train_on_batch(x, np.zeros(loaded.output.shape[1:], "float32")[None].repeat(4, 0))
    assert not np.allclose(loaded.get_layer("stem_bn").moving_variance.numpy(), 1.0)


@pytest.mark.parametrize("value", ["yes", "False", 1, None])
def test_rejects_other_values(value):
    with pytest.raises(ValueError, match="memory_efficient must be one of"):
        DenseNet(**BC, memory_efficient=value)


@pytest.mark.parametrize("mode, bottleneck, depth",
                         [(True, True, 16), (True, False, 13), ("full", True, 16),
                          ("full", False, 13)])
def test_gradients_equal_the_plain_model(images, mode, bottleneck, depth):
    plain, efficient = _pair(mode, bottleneck=bottleneck, depth=depth)
    x, y = _batch(images)
    got = _gradients(efficient, x, y)
    for path, expected in _gradients(plain, x, y).items():
        np.testing.assert_allclose(got[path], expected, atol=1e-5, err_msg=path)


@pytest.mark.parametrize("mode", MODES)
def test_float64_models_keep_float64(images, mode):
    """Under floatx float64 (TensorFlow) the recomputed BNs compute in float64, as Keras' BN.

    Their statistics were float32 always (``memory_efficient.statistics_dtype`` now),
    and a float64 model failed in its first call (float32 statistics, float64 gamma).
    """
    keras.config.set_floatx("float64")
    try:
        plain = DenseNet(**IMAGENET_STEM)
        efficient = DenseNet(**IMAGENET_STEM, memory_efficient=mode)
        _copy_weights(plain, efficient)
        x, y = _batch(images, IMAGENET_STEM["input_shape"][0])
        got, expected = _gradients(efficient, x, y), _gradients(plain, x, y)
    finally:
        keras.config.set_floatx("float32")
    assert efficient.get_layer("block1_layer1_bn1").moving_mean.dtype == "float64"
    for path, gradient in expected.items():
        assert got[path].dtype == np.float64, path
        np.testing.assert_allclose(got[path], gradient, rtol=0, atol=1e-12, err_msg=path)


def _gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, model(x, training=True))) + tf.add_n(model.losses)
    gradients = tape.gradient(loss, model.trainable_weights)
    return {w.path: g.numpy() for w, g in zip(model.trainable_weights, gradients)}


def _gradient_graph(model, input_shape, optimize=False):
    """The traced graph of ``model``'s gradients (grappler-optimized if asked): a list of nodes."""
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.grappler import tf_optimizer

    @tf.function
    def gradients(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True))
        return tape.gradient(loss, model.trainable_weights)

    concrete = gradients.get_concrete_function(tf.TensorSpec(input_shape))
    graph = concrete.graph.as_graph_def()
    if optimize:
        meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=graph, graph=concrete.graph)
        meta_graph.collection_def["train_op"].node_list.value.extend(
            t.op.name for t in concrete.outputs)
        graph = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta_graph)
    return [*graph.node, *(n for f in graph.library.function for n in f.node_def)]


def _one_block(mode, nb_layers):
    return DenseNet(nb_dense_block=1, nb_layers_per_block=[nb_layers], growth_rate=4,
                    bottleneck=True, input_shape=(16, 16, 3), classes=3, memory_efficient=mode)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_are_summed_layer_by_layer(mode):
    """After grappler, no gradient is summed from more parts than a dense layer sends back.

    Summed in one ``AddN`` of a part from every later layer (9 here), each
    map's gradient would hold them all until the last arrives.
    """
    nodes = _gradient_graph(_one_block(mode, 10), (2, 16, 16, 3), optimize=True)
    parts = [sum(not i.startswith("^") for i in n.input) for n in nodes if n.op == "AddN"]
    assert parts and max(parts) <= 4


@pytest.mark.parametrize("mode", MODES)
def test_graph_grows_linearly_with_depth(mode):
    """Each dense layer adds the same number of graph nodes, however many maps it reads.

    TensorFlow's memory grows with the graph (about 20 KB per node): O(depth^2)
    nodes per block would make memory per unit of depth grow with depth.
    """
    sizes = [len(_gradient_graph(_one_block(mode, n), (None, 16, 16, 3))) for n in (4, 8, 12)]
    assert abs((sizes[2] - sizes[1]) - (sizes[1] - sizes[0])) <= 4, sizes


@pytest.mark.parametrize("axis, dtype", [(-1, "float32"), (1, "float32"), (-1, "float16")])
def test_channel_moments_and_their_gradient(axis, dtype):
    """``channel_moments``' written-out gradient is TensorFlow's derivative of ``tf.nn.moments``."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(1.0, 2.0, size=(3, 6, 5, 4)), dtype)
    weights = tf.constant(rng.normal(size=(2, x.shape[axis])), "float32")
    axes = [i for i in range(4) if i != axis % 4]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = memory_efficient.channel_moments(x, axis, "float32")
        reference = tf.stack(tf.nn.moments(tf.cast(x, "float32"), axes=axes))
        losses = [tf.reduce_sum(m * weights) for m in (ours, reference)]
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    got, expected = (tape.gradient(loss, x) for loss in losses)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 if dtype == "float32" else 1e-3)


def test_channel_moments_gradient_takes_few_graph_nodes():
    """Each dense layer's maps (and its BN2 in ``"full"``) have their moments differentiated:
    TensorFlow's derivative of the two reductions takes 36 nodes per call at an unknown
    batch size, each costing memory; the written-out gradient 18."""
    def gradient_nodes(moments):
        def nodes(differentiate):
            @tf.function
            def loss_and_gradient(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(moments(x))
                return tape.gradient(loss, x) if differentiate else loss
            spec = tf.TensorSpec((None, 8, 8, 4))
            return len(loss_and_gradient.get_concrete_function(spec).graph.as_graph_def().node)
        return nodes(True) - nodes(False)

    loss = gradient_nodes(lambda x: x)
    ours = gradient_nodes(lambda x: memory_efficient.channel_moments(x, -1, "float32")) - loss
    autodiff = gradient_nodes(lambda x: tf.stack(tf.nn.moments(x, axes=[0, 1, 2]))) - loss
    assert ours <= 0.5 * autodiff, (ours, autodiff)


@pytest.mark.parametrize("mode", MODES)
def test_recomputation_waits_for_the_backward_pass(mode):
    """The recomputed concatenations depend on the loss's gradient.

    Without that dependency TensorFlow's executor would run the recomputation
    as soon as the feature maps exist, during the forward pass, and hold its
    results (every layer's whole input) until the backward pass.
    """
    nodes = _gradient_graph(_one_block(mode, 4), (None, 16, 16, 3))
    recomputed = _recomputed_concatenations(nodes)
    assert len(recomputed) == 4  # one per layer
    ancestors = _ancestors(nodes)
    for names in recomputed.values():
        for name in names:
            assert any(a.startswith("gradient_tape/") for a in ancestors(name)), name


@pytest.mark.parametrize("mode", MODES)
def test_each_recomputation_waits_for_the_later_layers_gradients(mode):
    """A layer's recomputation starts once the later layer's kernel gradients are done.

    The concatenation's gradient, which the next recomputation waits for, is
    passed on only after the layer's other gradients: else TensorFlow's executor
    may run two layers' backward passes at once, each holding transients as
    wide as its input. Counted here: the conv kernel gradients that each
    recomputation depends on (0 without that hold: nothing reads them in the graph).
    """
    nodes = _gradient_graph(_one_block(mode, 4), (None, 16, 16, 3))
    ancestors = _ancestors(nodes)
    op_type = {n.name: n.op for n in nodes}
    waits_for = sorted(
        sum(op_type.get(a) == "Conv2DBackpropFilter"
            for a in set().union(*(ancestors(name) for name in names)))
        for names in _recomputed_concatenations(nodes).values())
    recomputed_convs = 2 if mode == "full" else 1  # per layer
    assert waits_for == [0, recomputed_convs, 2 * recomputed_convs, 3 * recomputed_convs]


def _recomputed_concatenations(nodes):
    """``{name scope: [names of its nodes but constants]}`` of each layer's recomputed
    concatenation (``memory_efficient.recompute._concatenated_after``)."""
    scopes = {}
    for node in nodes:
        scope = next((s for s in node.name.split("/")[:-1]
                      if s.startswith("recomputed_concatenation")), None)
        if scope and node.op != "Const":
            scopes.setdefault(scope, []).append(node.name)
    return scopes


def _ancestors(nodes):
    """``ancestors(name)``: the names of every node that ``name`` depends on, control
    dependencies included."""
    inputs = {n.name: [i.lstrip("^").split(":")[0] for i in n.input] for n in nodes}

    def ancestors(name):
        seen, pending = set(), [name]
        while pending:
            for parent in inputs.get(pending.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    pending.append(parent)
        return seen
    return ancestors


@pytest.mark.parametrize("mode", MODES)
def test_one_train_step_updates_bn_statistics_once(images, mode):
    """After one step every weight, moving statistics included, equals the plain model's."""
    plain, efficient = _pair(mode)
    x, y = _batch(images)
    for model in (plain, efficient):
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        model.train_on_batch(x, y)
    for bn in ("bn1", "bn2"):
        moving_variance = efficient.get_layer(f"block1_layer2_{bn}").moving_variance.numpy()
        assert not np.allclose(moving_variance, 1.0)  # it moved
    expected = {w.path: w.numpy() for w in plain.weights}
    for got in efficient.weights:
        np.testing.assert_allclose(got.numpy(), expected[got.path], atol=1e-5, err_msg=got.path)


@pytest.mark.parametrize("saved_mode", [False, *MODES])
def test_weights_files_move_between_layouts(tmp_path, images, saved_mode):
    plain, efficient = _pair("full" if saved_mode == "full" else True)
    x, _ = _batch(images)
    expected = plain.predict(x, verbose=0)
    path = str(tmp_path / "model.weights.h5")
    (efficient if saved_mode else plain).save_weights(path)
    for mode in (False, *MODES):
        model = DenseNet(**BC, memory_efficient=mode)
        model.load_weights(path)
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
        np.testing.assert_allclose(DenseNet(**BC, memory_efficient=mode, weights=path).predict(
            x, verbose=0), expected, atol=1e-6)


@pytest.mark.parametrize("saved_mode, mode, policy", [
    (False, "full", "float32"), ("full", True, "float32"), ("full", False, "mixed_float16")])
def test_training_checkpoints_load_in_any_mode(tmp_path, images, saved_mode, mode, policy):
    """A ``save_weights`` checkpoint with optimizer state loads into another mode (the
    optimizer lists variables in layer order, which "full" changes): every variable, the
    optimizer's (a LossScaleOptimizer's under mixed precision) included, as saved."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        models = []
        for memory_mode in (saved_mode, mode):
            model = DenseNet(**BC, memory_efficient=memory_mode)
            model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                          "sparse_categorical_crossentropy")
            model.optimizer.build(model.trainable_variables)
            models.append(model)
        saved, loading = models
        saved.train_on_batch(*_batch(images))
        path = str(tmp_path / "checkpoint.weights.h5")
        saved.save_weights(path)
        loading.load_weights(path)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    expected, got = training_state(saved), training_state(loading)
    assert sorted(map(str, got)) == sorted(map(str, expected))
    for key, variable in expected.items():
        np.testing.assert_array_equal(got[key].numpy(), variable.numpy(), err_msg=str(key))
    other = DenseNet(**{**BC, "growth_rate": 6})
    other.save_weights(str(tmp_path / "other.weights.h5"))
    with pytest.raises(ValueError):  # another network: Keras' own error
        loading.load_weights(str(tmp_path / "other.weights.h5"))


@pytest.mark.parametrize("mode", [False, *MODES])
def test_keras_file_round_trip(tmp_path, images, mode):
    model = DenseNet(**BC, memory_efficient=mode)
    x, _ = _batch(images)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for name in ("block1_layer1_bn1", "block1_layer1_conv1", "block1_layer1_bn2"):
        assert type(loaded.get_layer(name)) is type(model.get_layer(name))
    expected = model.predict(x, verbose=0)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    for other in (False, *MODES):  # the .keras file's weights load into every layout
        layout = DenseNet(**BC, memory_efficient=other)
        layout.load_weights(path)
        np.testing.assert_allclose(layout.predict(x, verbose=0), expected, atol=1e-6)


@pytest.mark.parametrize("mode, config", [(True, BC), ("full", BC), ("full", IMAGENET_STEM)])
def test_mixed_precision_training(images, mode, config):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = DenseNet(**config, memory_efficient=mode)
        model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        x, y = _batch(images, config["input_shape"][0])
        history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history.history["loss"][0])
    if config is IMAGENET_STEM:
        stem = model.get_layer("stem_bn")
        assert stem.output.dtype == "float16" and stem.moving_variance.dtype == "float32"
        assert not np.allclose(stem.moving_variance.numpy(), 1.0)
    computing = model.get_layer("block1_layer1_conv1" if mode is True else "block1_layer1_bn2")
    assert computing.compute_dtype == "float16" and computing.output.dtype == "float16"
    assert model.get_layer("block1_layer1_bn1").gamma.dtype == "float32"
    assert model.get_layer("block1_layer1_bn2").moving_variance.dtype == "float32"


@pytest.mark.parametrize("conv_class", [memory_efficient.RecomputedConv, memory_efficient.KernelConv2D])
def test_recomputed_conv_rejects_bias_and_activation(conv_class):
    with pytest.raises(ValueError, match="use_bias=False"):
        conv_class(4, 1, use_bias=True)
    with pytest.raises(ValueError, match="activation=None"):
        conv_class(4, 1, use_bias=False, activation="relu")


BACKEND_SCRIPT = """
import sys
import numpy as np, keras
from keras_densenet import DenseNet
x = np.random.default_rng(0).normal(size=(6, 16, 16, 3)).astype("float32")
y = np.array([0, 1, 2, 0, 1, 2])
for mode in (True, "full"):
    model = DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5,
                     input_shape=(16, 16, 3), classes=3, memory_efficient=mode)
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    bn = model.get_layer("block1_layer1_bn2")
    before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    loss = model.fit(x, y, epochs=1, batch_size=6, verbose=0).history["loss"][0]
    assert np.isfinite(loss) and not np.allclose(before, keras.ops.convert_to_numpy(bn.moving_mean))
    # channels_first (which TensorFlow's CPU convolutions lack), ImageNet stems (the deep one
    # recomputed by "full" only): one step matches the plain model
    deep = dict(stem_type="deep", anti_alias=True)
    for stem in (dict(), deep) if mode == "full" else (dict(),):
        first = dict(depth=10, growth_rate=4, bottleneck=True, input_shape=(3, 16, 16), classes=3,
                     data_format="channels_first", subsample_initial_block=True, **stem)
        plain, efficient = DenseNet(**first), DenseNet(**first, memory_efficient=mode)
        values = {w.path: keras.ops.convert_to_numpy(w) for w in plain.weights}
        for w in efficient.weights:
            w.assign(values[w.path])
        for m in (plain, efficient):
            m.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
            m.train_on_batch(np.transpose(x, (0, 3, 1, 2)), y)
        moved = {w.path: keras.ops.convert_to_numpy(w) for w in plain.non_trainable_weights}
        for w in efficient.non_trainable_weights:  # the stems' too, each updated once
            np.testing.assert_allclose(keras.ops.convert_to_numpy(w), moved[w.path], rtol=1e-3,
                                       atol=1e-6, err_msg=w.path)
        np.testing.assert_allclose(efficient.predict(np.transpose(x, (0, 3, 1, 2)), verbose=0),
                                   plain.predict(np.transpose(x, (0, 3, 1, 2)), verbose=0),
                                   atol=1e-5)
# An old .keras file (no chain of concatenations: the layers concatenate the maps) trains.
old = keras.models.load_model(sys.argv[1])
old.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
images = np.random.default_rng(1).normal(size=(4, *old.input_shape[1:])).astype("float32")
assert np.isfinite(old.train_on_batch(images, np.arange(4) % old.output_shape[-1]))
print("ok", keras.backend.backend())
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_train(backend):
    pytest.importorskip(backend)
    legacy = os.path.join(os.path.dirname(__file__), "data", "legacy", "memory_efficient.keras")
    result = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, legacy], capture_output=True,
                            text=True, timeout=240,
                            env={**os.environ, "KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ok {backend}" in result.stdout


JAX_MEMORY_SCRIPT = """
import json, jax, keras, numpy as np
from keras.src.backend.common import dtypes
from keras_densenet import DenseNet
assert jax.config.jax_enable_x64
keras.config.set_floatx("float64")
# Keras promotes float64 to float32 on every backend but TensorFlow, so batch
# normalization would run in float32 (see the test's docstring).
dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64"
assert keras.backend.result_type("float64", "float32") == "float64"
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(8, 16, 16, 3))
y = np.arange(8) % 4
plain = None
result = {}
for mode in (False, True, "full"):
    model = DenseNet(depth=40, growth_rate=12, bottleneck=True, reduction=0.5,
                     input_shape=(16, 16, 3), classes=4, memory_efficient=mode)
    if plain is None:
        plain = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    for w in model.weights:
        w.assign(plain[w.path])
    trainable = [v.value for v in model.trainable_variables]
    others = [v.value for v in model.non_trainable_variables]

    def loss(trainable):
        scores, _ = model.stateless_call(trainable, others, x, training=True)
        return keras.losses.sparse_categorical_crossentropy(y, scores).mean()

    step = jax.jit(jax.value_and_grad(loss))
    value, gradients = step(trainable)
    result[str(mode)] = dict(
        temp=step.lower(trainable).compile().memory_analysis().temp_size_in_bytes,
        gradients={v.path: np.asarray(g).tolist() for v, g in
                   zip(model.trainable_variables, gradients)})
print(json.dumps(result))
"""


def test_jax_recomputation_saves_memory():
    """On JAX the recomputed layers need less of XLA's temporary memory than the plain model.

    ``jax.checkpoint`` alone saved nothing in a jitted CPU train step (XLA ran the
    recomputation in the forward pass): the old code needed 1.04x the plain
    model's temporary bytes in both modes; measured now 0.58x (True), 0.36x ("full").

    In float64 throughout, batch normalization included: Keras computes float64
    in float32 on JAX (its type promotion maps float64 to float32 there), and in
    float32 the two models' normalizations differ by rounding, so a ReLU input
    within rounding of zero (6e-8 with one weight seed of twelve) went either
    way and moved a layer's gradients by 4e-4 (CI failed so). Measured now:
    4e-16 at most, with that seed too.
    """
    pytest.importorskip("jax")
    result = subprocess.run([sys.executable, "-c", JAX_MEMORY_SCRIPT], capture_output=True,
                            text=True, timeout=400,
                            env={**os.environ, "KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    plain = measured["False"]
    for mode, limit in (("True", 0.75), ("full", 0.5)):
        assert measured[mode]["temp"] < limit * plain["temp"], (mode, measured[mode]["temp"],
                                                                plain["temp"])
        for path, gradient in plain["gradients"].items():
            np.testing.assert_allclose(measured[mode]["gradients"][path], gradient, atol=1e-10,
                                       err_msg=f"{mode} {path}")
