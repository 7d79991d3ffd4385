"""``keras-densenet port``: Keras 3 files from each family, checked against the source.

The port prints the largest |logit difference| between the source
implementation and our model; these tests parse it and hold it to 1e-4.
"""

import re

import numpy as np
import pytest

from keras_densenet import DenseNetImageNet121, weights
from keras_densenet.apps import cli, port
from keras_densenet.apps.source_models import original_keras_densenet

torch = pytest.importorskip("torch")
tf_keras = pytest.importorskip("tf_keras")

from weight_references import (  # noqa: E402  (needs torch and tf_keras)
    images, keras_applications_model, random_torch_densenet, randomize_tf_keras)

TOLERANCE = 1e-4


def _reported_difference(printed):
    return float(re.search(r"max \|ours - source implementation\| = (\S+)", printed).group(1))


def test_port_of_the_original_release_is_self_describing(tmp_path, capsys):
    size = 64  # even: the 'same' stem differs from the symmetric one
    reference = randomize_tf_keras(original_keras_densenet("densenet121",
                                                           input_shape=(size, size, 3)))
    source = str(tmp_path / "random-DenseNet-BC-121.h5")
    reference.save_weights(source)
    out = str(tmp_path / "d121.weights.h5")
    assert port.main([source, "--arch", "densenet121", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "bn_epsilon=1.1e-05, stem_padding='same', preprocessing='caffe_bgr'" in printed
    assert _reported_difference(printed) <= TOLERANCE
    assert weights.read_metadata(out) == dict(bn_epsilon=1.1e-5, stem_padding="same",
                                              preprocessing="caffe_bgr")
    reloaded = DenseNetImageNet121(weights=out, activation=None, input_shape=(3, size, size),
                                   data_format="channels_first")  # epsilon, padding from the file
    outputs = np.asarray(reloaded(images(size).transpose(0, 3, 1, 2), training=False))
    expected = reference(images(size), training=False).numpy()
    assert np.max(np.abs(outputs - expected)) <= TOLERANCE


def test_port_command_of_a_torch_feature_extractor_channels_first(tmp_path, capsys):
    source = str(tmp_path / "random-densenet121.pth")
    torch.save(random_torch_densenet("densenet121").state_dict(), source)
    out = str(tmp_path / "features.weights.h5")
    assert cli.main(["port", source, "--arch", "densenet121", "--out", out, "--no-top",
                     "--data-format", "channels_first"]) == 0
    printed = capsys.readouterr().out
    assert "include_top=False, channels_first, bn_epsilon=1e-05" in printed
    assert _reported_difference(printed) <= TOLERANCE
    model = DenseNetImageNet121(weights=out, include_top=False, input_shape=(64, 64, 3))
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1e-5)


def test_port_of_keras_applications_checks_against_tf_keras(tmp_path, capsys):
    source = str(tmp_path / "random-densenet121-ka.h5")
    randomize_tf_keras(keras_applications_model("densenet121", 64)).save_weights(source)
    assert port.main([source, "--arch", "densenet121", "--out",
                      str(tmp_path / "ka.weights.h5")]) == 0
    printed = capsys.readouterr().out
    assert "bn_epsilon=1.001e-05, stem_padding='symmetric', preprocessing='torch'" in printed
    assert _reported_difference(printed) <= TOLERANCE


def test_port_errors(tmp_path, capsys):
    out = str(tmp_path / "x.weights.h5")
    assert cli.main(["port", str(tmp_path / "missing.pth"), "--arch", "densenet121",
                     "--out", out]) == 2
    assert "source '" in (err := capsys.readouterr().err) and "': no such file or folder." in err
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"0123456789abcdef" * 4)
    assert cli.main(["port", str(junk), "--arch", "densenet121", "--out", out]) == 2
    assert "is not a weights file this package reads" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--out must end with .weights.h5"):
        port.port(str(junk), "densenet121", str(tmp_path / "x.h5"))
