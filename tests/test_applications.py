"""keras_densenet.applications is a drop-in for keras.applications.densenet."""

import inspect

import keras
import pytest

from keras_densenet import applications, weights

DROP_INS = ["DenseNet121", "DenseNet169", "DenseNet201"]


@pytest.mark.parametrize("name", DROP_INS)
def test_signature_equals_keras_applications(name):
    ours = inspect.signature(getattr(applications, name)).parameters
    theirs = inspect.signature(getattr(keras.applications, name)).parameters
    assert list(ours) == list(theirs)
    assert {k: p.default for k, p in ours.items()} == {k: p.default for k, p in theirs.items()}


@pytest.mark.parametrize("name", DROP_INS)
def test_imagenet_means_the_keras_applications_file(name, monkeypatch):
    requested = []

    def fake_download(entry, cache_dir=None):
        requested.append(entry)
        raise OSError("offline")

    monkeypatch.setattr(weights.registry, "download", fake_download)
    for include_top in (True, False):
        with pytest.raises(OSError, match="offline"):
            getattr(applications, name)(include_top=include_top)
    from keras.src.applications import densenet as keras_densenet_module  # its URL constants

    prefix = name.upper() + "_WEIGHT_PATH"
    expected = [getattr(keras_densenet_module, prefix),
                getattr(keras_densenet_module, prefix + "_NO_TOP")]
    assert [entry["url"] for entry in requested] == expected


def test_same_parameters_and_default_shapes_as_keras_applications():
    ours = applications.DenseNet121(weights=None)
    theirs = keras.applications.DenseNet121(weights=None)
    assert ours.count_params() == theirs.count_params()
    assert ours.input.shape == theirs.input.shape == (None, 224, 224, 3)
    assert ours.name == theirs.name == "densenet121"
    headless = applications.DenseNet121(weights=None, include_top=False, pooling="avg")
    assert headless.input.shape == (None, None, None, 3)
    assert headless.output.shape == (None, 1024)


def test_keras_applications_checks():
    with pytest.raises(ValueError, match="classes should be 1000"):
        applications.DenseNet121(classes=10)
    with pytest.raises(ValueError, match="input shape must be \\(224, 224, 3\\)"):
        applications.DenseNet121(input_shape=(160, 160, 3))
    with pytest.raises(ValueError, match="classifier_activation must be None or \"softmax\""):
        applications.DenseNet121(classifier_activation="sigmoid")
    model = applications.DenseNet121(weights=None, classes=5, classifier_activation="sigmoid",
                                     input_shape=(64, 64, 3))
    assert model.output.shape == (None, 5)


def test_channels_first_follows_the_keras_setting():
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        model = applications.DenseNet121(weights=None, include_top=False)
    finally:
        keras.config.set_image_data_format(previous)
    assert model.input.shape == (None, 3, None, None)


def test_preprocess_input_matches_keras_applications():
    import numpy as np

    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(applications.preprocess_input(x),
                               keras.applications.densenet.preprocess_input(x.copy()), atol=1e-5)
    scores = np.zeros((1, 1000), "float32")
    scores[0, 207] = 1.0  # keras.applications' decode needs a download; ours ships the index
    assert applications.decode_predictions(scores, top=1)[0][0][:2] == ("n02099601",
                                                                        "golden_retriever")
