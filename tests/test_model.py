"""The DenseNet builder: shapes, names, options, validation, save/load."""

import keras
import numpy as np
import pytest

from keras_densenet import DenseNet
from keras_densenet.blocks import WeightDecay

SMALL_BC = dict(depth=16, growth_rate=4, bottleneck=True, reduction=0.5, classes=5)
SMALL_IMAGENET = dict(
    nb_dense_block=4, nb_layers_per_block=[1, 2, 1, 1], growth_rate=4, nb_filter=8,
    bottleneck=True, reduction=0.5, subsample_initial_block=True, classes=7,
)


def test_cifar_style_shapes_and_layers_per_block(images):
    model = DenseNet(depth=16, growth_rate=4, input_shape=(32, 32, 3), include_top=False)
    # depth 16 = 3 blocks * 4 layers + 4; channels 8 -> 24 -> 40 -> 56 (no compression)
    assert model.output.shape == (None, 8, 8, 56)
    assert [n for n in (layer.name for layer in model.layers) if n.endswith("_conv2")] == [
        f"block{b}_layer{i}_conv2" for b in (1, 2, 3) for i in (1, 2, 3, 4)
    ]


def test_bottleneck_compression_and_top(images):
    model = DenseNet(**SMALL_BC, input_shape=(32, 32, 3))
    assert model.get_layer("block1_layer1_conv1").filters == 16  # 4 * growth_rate
    assert model.get_layer("transition1_conv").filters == int((8 + 2 * 4) * 0.5)
    probs = model.predict(images(2, 32), verbose=0)
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_imagenet_stem_layer_names_and_strides():
    model = DenseNet(**SMALL_IMAGENET, input_shape=(64, 64, 3), include_top=False)
    names = [layer.name for layer in model.layers]
    assert names[:7] == ["image", "stem_pad", "stem_conv", "stem_bn", "stem_relu",
                         "stem_pool_pad", "stem_pool"]
    for name in ("block2_layer2_bn1", "block2_layer2_relu1", "block2_layer2_conv1",
                 "block2_layer2_bn2", "block2_layer2_relu2", "block2_layer2_conv2",
                 "block2_layer2_concat", "transition3_bn", "transition3_relu",
                 "transition3_conv", "transition3_pool", "final_bn", "final_relu"):
        assert name in names
    assert model.get_layer("stem_pool").output.shape[1:3] == (16, 16)
    assert model.output.shape[1:3] == (2, 2)  # 64 / 32


def test_same_stem_padding_has_no_pad_layers():
    model = DenseNet(**SMALL_IMAGENET, input_shape=(64, 64, 3), stem_padding="same")
    names = {layer.name for layer in model.layers}
    assert "stem_pad" not in names and "stem_pool_pad" not in names
    assert model.get_layer("stem_pool").output.shape[1:3] == (16, 16)


@pytest.mark.parametrize("pooling, shape", [(None, (None, 2, 2, 9)), ("avg", (None, 9)),
                                            ("max", (None, 9))])
def test_pooling_without_top(pooling, shape):
    model = DenseNet(**SMALL_IMAGENET, input_shape=(64, 64, 3), include_top=False,
                     pooling=pooling)
    assert model.output.shape == shape


def test_variable_input_size_by_default(images):
    model = DenseNet(**SMALL_BC)
    assert model.input.shape == (None, None, None, 3)
    assert model.predict(images(1, 40), verbose=0).shape == (1, 5)


@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_top_activation(images, activation):
    model = DenseNet(**SMALL_BC, input_shape=(32, 32, 3), activation=activation)
    out = model.predict(images(4, 32) / 255.0, verbose=0)
    if activation == "sigmoid":
        assert np.all((out > 0) & (out < 1))
    else:
        assert np.any(out < 0)  # logits


def test_dropout_and_weight_decay():
    model = DenseNet(**SMALL_BC, input_shape=(32, 32, 3), dropout_rate=0.2, weight_decay=1e-4)
    assert model.get_layer("block1_layer1_drop").rate == 0.2
    assert model.get_layer("transition1_drop").rate == 0.2
    # one L2 term per conv kernel, BN gamma and beta, and the classifier kernel
    kernels = [w for w in model.trainable_weights if "kernel" in w.path or "gamma" in w.path
               or "beta" in w.path]
    assert len(model.losses) == len(kernels)
    no_decay = DenseNet(**SMALL_BC, input_shape=(32, 32, 3), weight_decay=0.0)
    assert no_decay.losses == []
    assert not any(layer.name.endswith("_drop") for layer in no_decay.layers)
    regularizer = model.get_layer("block1_layer1_conv1").kernel_regularizer
    assert isinstance(regularizer, WeightDecay) and regularizer.l2 == pytest.approx(0.5e-4)


def test_weight_decay_is_keras_l2():
    """``WeightDecay``: the penalty, gradient and config of ``keras.regularizers.L2``."""
    import tensorflow as tf

    weights = keras.Variable(np.random.default_rng(0).normal(size=(3, 3, 8, 4)), dtype="float32")
    ours, reference = WeightDecay(5e-5), keras.regularizers.L2(5e-5)
    assert isinstance(ours, keras.regularizers.L2)
    assert ours.get_config() == reference.get_config()
    results = []
    for regularizer in (ours, reference):
        with tf.GradientTape() as tape:
            penalty = regularizer(weights)
        results.append((penalty.numpy(), tape.gradient(penalty, weights.value).numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], 1e-4 * weights.numpy(), rtol=1e-6)


def test_weight_decay_adds_fewer_graph_nodes_than_keras_l2():
    """Each regularized variable adds graph nodes to the traced train step (TensorFlow's memory
    grows with them): ``WeightDecay`` about two thirds of ``keras.regularizers.L2``'s."""
    import tensorflow as tf

    def nodes(regularizer, convs):
        inputs = keras.Input((8, 8, 3))
        x = inputs
        for _ in range(convs):
            x = keras.layers.Conv2D(4, 3, padding="same", kernel_regularizer=regularizer,
                                    use_bias=False)(x)
        model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        model.compile(keras.optimizers.SGD(0.01), "mse")
        model.optimizer.build(model.trainable_variables)
        step = tf.function(model.train_step).get_concrete_function(
            (tf.zeros((2, 8, 8, 3)), tf.zeros((2, 4))))
        return len(step.graph.get_operations())

    per_conv = (nodes(None, 3) - nodes(None, 1)) / 2

    def per_variable(regularizer):
        return (nodes(regularizer, 3) - nodes(regularizer, 1)) / 2 - per_conv

    ours, reference = per_variable(WeightDecay(5e-5)), per_variable(keras.regularizers.L2(5e-5))
    assert ours <= 0.7 * reference, (ours, reference)


def test_conv_layers_are_pre_activation_without_bias():
    model = DenseNet(**SMALL_BC, input_shape=(32, 32, 3))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(not conv.use_bias for conv in convs)
    assert all(conv.kernel_initializer.__class__.__name__ == "HeNormal" for conv in convs)


def test_input_tensor():
    inputs = keras.Input((32, 32, 3), name="my_images")
    model = DenseNet(**SMALL_BC, input_tensor=inputs)
    assert model.inputs[0] is inputs


@pytest.mark.parametrize("config", [SMALL_BC, {**SMALL_IMAGENET, "include_top": False}],
                         ids=["cifar-bc", "imagenet-style"])
def test_channels_first_matches_channels_last(images, config):
    last = DenseNet(**config, input_shape=(64, 64, 3), data_format="channels_last")
    first = DenseNet(**config, input_shape=(3, 64, 64), data_format="channels_first")
    _randomize_bn_statistics(last)
    first.set_weights(last.get_weights())
    x = images(2, 64)
    expected = last.predict(x, verbose=0)
    got = first.predict(np.transpose(x, (0, 3, 1, 2)), verbose=0)
    if got.ndim == 4:
        got = np.transpose(got, (0, 2, 3, 1))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_data_format_follows_keras_setting():
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        model = DenseNet(**SMALL_BC)
    finally:
        keras.config.set_image_data_format(previous)
    assert model.input.shape == (None, 3, None, None)
    assert model.get_layer("block1_layer1_bn1").axis == 1


def test_save_and_load_round_trip(tmp_path, images):
    model = DenseNet(**SMALL_BC, input_shape=(32, 32, 3))
    _randomize_bn_statistics(model)
    x = images(3, 32)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    regularizer = loaded.get_layer("block1_layer1_bn1").gamma_regularizer
    assert isinstance(regularizer, WeightDecay) and regularizer.l2 == pytest.approx(0.5e-4)


def test_weights_file_round_trip(tmp_path, images):
    model = DenseNet(**SMALL_BC, input_shape=(32, 32, 3))
    _randomize_bn_statistics(model)
    path = tmp_path / "small.weights.h5"
    model.save_weights(path)
    reloaded = DenseNet(**SMALL_BC, input_shape=(32, 32, 3), weights=str(path))
    x = images(2, 32)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=41), "depth=41 is not valid for nb_dense_block=3: depth must be 3\\*N\\+4"),
    (dict(depth=19, bottleneck=True), "with bottleneck: depth must be 6\\*N\\+4"),
    (dict(depth=4), "depth=4 is not valid"),
    (dict(reduction=1.0), "reduction must be a finite number in \\[0, 1\\)"),
    (dict(reduction=-0.1), "reduction must be a finite number in \\[0, 1\\)"),
    (dict(dropout_rate=1.0), "dropout_rate must be a finite number in \\[0, 1\\)"),
    (dict(weight_decay=-1.0), "weight_decay must be a finite number in \\[0, inf\\)"),
    (dict(nb_layers_per_block=[2, 2]), "nb_layers_per_block has 2 entries but nb_dense_block is 3"),
    (dict(nb_layers_per_block=[2, 0, 2]), "nb_layers_per_block must be a positive integer"),
    (dict(growth_rate=0), "growth_rate must be a positive integer"),
    (dict(nb_filter=2.5), "nb_filter must be a positive integer"),
    (dict(classes=0), "classes must be a positive integer"),
    (dict(pooling="mean", include_top=False), "pooling must be one of"),
    (dict(activation="no_such_activation"), "activation must be None or the name of a Keras activation"),
    (dict(data_format="NHWC"), "data_format must be one of"),
    (dict(stem_padding="reflect"), "stem_padding must be one of"),
    (dict(input_shape=(32, 32)), "input_shape must have 3 entries"),
    (dict(input_shape=(2, 2, 3)), "too small: this network halves the image 2 times"),
    (dict(input_shape=(16, 16, 3), nb_dense_block=4, nb_layers_per_block=1,
          subsample_initial_block=True), "must be at least 32"),
    (dict(weights="no/such/file.weights.h5"), "weights"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenseNet(**kwargs)


def _randomize_bn_statistics(model):
    """Give every BN layer non-trivial moving statistics, so that mistakes show."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))


@pytest.mark.parametrize("memory_efficient", [False, "full"])
def test_first_training_step_is_traced_once(images, memory_efficient):
    """The optimizer is built before the step is traced: one trace, not Keras' two (TensorFlow)."""
    model = DenseNet(**SMALL_BC, input_shape=(32, 32, 3), memory_efficient=memory_efficient)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    traces = []
    call = model.call
    model.call = lambda *args, **kwargs: traces.append(1) or call(*args, **kwargs)
    for _ in range(2):
        model.train_on_batch(images(2, 32) / 255.0, np.array([0, 1]))
    assert model.optimizer.built
    assert len(traces) == 1
