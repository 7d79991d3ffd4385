"""Loading the three published weight families, checked against their implementations.

The reference files are made here with random weights (and random BN
statistics) in each family's own format: tf_keras writes the Keras 2 h5 files,
torch and safetensors the state dicts.
"""

import functools
import http.server
import threading

import numpy as np
import pytest

from keras_densenet import DenseNet, DenseNetImageNet, DenseNetImageNet121, port, weights
from keras_densenet.references import original_keras_densenet, torch_densenet

torch = pytest.importorskip("torch")
tf_keras = pytest.importorskip("tf_keras")

SIZE = 65  # odd: 'same' and symmetric stem padding then agree only if handled right


def _randomize_tf_keras(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            gamma, beta, mean, var = (v.shape for v in values)
            values = [rng.uniform(0.5, 1.5, gamma), rng.normal(0, 0.1, beta),
                      rng.normal(0, 0.1, mean), rng.uniform(0.5, 1.5, var)]
        else:
            values = [rng.normal(0, np.sqrt(2.0 / np.prod(v.shape[:-1])), v.shape) for v in values]
        layer.set_weights(values)


def _randomize_torch(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return module.eval()


def _images(size=SIZE, n=2):
    return np.random.default_rng(1).normal(size=(n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def keras_applications_file(tmp_path_factory):
    reference = tf_keras.applications.DenseNet121(weights=None, input_shape=(SIZE, SIZE, 3),
                                                  classifier_activation=None)
    _randomize_tf_keras(reference)
    path = str(tmp_path_factory.mktemp("ka") / "densenet121_weights_tf_dim_ordering_tf_kernels.h5")
    reference.save_weights(path)
    return path, reference.predict(_images(), verbose=0)


@pytest.fixture(scope="module")
def original_keras_file(tmp_path_factory):
    reference = original_keras_densenet("densenet121", input_shape=(SIZE + 1, SIZE + 1, 3))
    _randomize_tf_keras(reference)
    path = str(tmp_path_factory.mktemp("orig") / "DenseNet-BC-121-32.h5")
    reference.save_weights(path)
    return path, reference.predict(_images(SIZE + 1), verbose=0)  # even size: 'same' matters


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
    reference = _randomize_torch(torch_densenet("densenet121"))
    path = str(tmp_path_factory.mktemp("torch") / "densenet121-a639ec97.pth")
    torch.save(reference.state_dict(), path)
    with torch.no_grad():
        logits = reference(torch.from_numpy(_images().transpose(0, 3, 1, 2).copy())).numpy()
    return path, reference, logits


def _ours(path, data_format="channels_last", size=SIZE, **kwargs):
    shape = (size, size, 3) if data_format == "channels_last" else (3, size, size)
    return DenseNetImageNet121(weights=path, activation=None, input_shape=shape,
                               data_format=data_format, **kwargs)


def _predict(model, images, data_format):
    if data_format == "channels_first":
        images = images.transpose(0, 3, 1, 2)
    return model.predict(images, verbose=0)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_keras_applications_h5_reproduces_tf_keras(keras_applications_file, data_format):
    path, expected = keras_applications_file
    model = _ours(path, data_format)
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1.001e-5)
    assert np.max(np.abs(_predict(model, _images(), data_format) - expected)) <= 1e-4


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_original_keras_release_reproduces_its_model(original_keras_file, data_format):
    path, expected = original_keras_file
    model = _ours(path, data_format, size=SIZE + 1)
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1.1e-5)
    assert "stem_pad" not in [layer.name for layer in model.layers]  # 'same' stem
    assert np.max(np.abs(_predict(model, _images(SIZE + 1), data_format) - expected)) <= 1e-4


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_torch_state_dict_reproduces_torch(torch_reference, data_format):
    path, _, expected = torch_reference
    model = _ours(path, data_format)
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1e-5)
    assert np.max(np.abs(_predict(model, _images(), data_format) - expected)) <= 1e-4


def test_old_torchvision_keys_and_safetensors(torch_reference, tmp_path):
    from safetensors.numpy import save_file

    _, reference, expected = torch_reference
    state = reference.state_dict()
    old_style = {k.replace("norm1", "norm.1").replace("conv2", "conv.2"): v
                 for k, v in state.items()}
    old_path = str(tmp_path / "old.pth")
    torch.save(old_style, old_path)
    safe_path = str(tmp_path / "densenet121.tv_in1k.safetensors")
    save_file({k: v.numpy() for k, v in state.items()}, safe_path)
    for path in (old_path, safe_path):
        assert np.max(np.abs(_ours(path).predict(_images(), verbose=0) - expected)) <= 1e-4


def test_top_less_model_takes_the_features_of_a_file_with_top(torch_reference):
    path, reference, _ = torch_reference
    model = _ours(path, include_top=False)
    with torch.no_grad():
        features = torch.relu(reference.features(
            torch.from_numpy(_images().transpose(0, 3, 1, 2).copy()))).numpy()
    np.testing.assert_allclose(model.predict(_images(), verbose=0),
                               features.transpose(0, 2, 3, 1), atol=1e-4)


@pytest.mark.parametrize("architecture", ["densenet161", "densenet169", "densenet201"])
def test_every_torchvision_architecture_maps_onto_ours(architecture):
    state = torch_densenet(architecture).state_dict()
    table = weights.weight_formats.torch_state_dict_to_table(state)
    model = DenseNetImageNet(architecture, input_shape=(32, 32, 3))
    weights.assign(model, table)  # raises unless every layer matches


@pytest.mark.parametrize("architecture", ["densenet169", "densenet201"])
def test_every_keras_applications_architecture_maps_onto_ours(architecture, tmp_path):
    name = "DenseNet" + architecture[len("densenet"):]
    reference = getattr(tf_keras.applications, name)(weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "ka.h5")
    reference.save_weights(path)
    DenseNetImageNet(architecture, weights=path, input_shape=(32, 32, 3))


@pytest.mark.parametrize("architecture", ["densenet161", "densenet169"])
def test_every_original_release_architecture_maps_onto_ours(architecture, tmp_path):
    reference = original_keras_densenet(architecture, include_top=False, input_shape=(32, 32, 3))
    path = str(tmp_path / "no-top.h5")
    reference.save_weights(path)
    DenseNetImageNet(architecture, weights=path, include_top=False, input_shape=(32, 32, 3))


def test_port_writes_a_self_describing_keras3_file(original_keras_file, tmp_path, capsys):
    path, expected = original_keras_file
    out = str(tmp_path / "d121.weights.h5")
    assert port.main([path, "--arch", "densenet121", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "bn_epsilon=1.1e-05, stem_padding='same', preprocessing='caffe_bgr'" in printed
    difference = float(printed.split("source implementation| = ")[1].split()[0])
    assert difference <= 1e-4
    assert weights.read_metadata(out) == dict(bn_epsilon=1.1e-5, stem_padding="same",
                                              preprocessing="caffe_bgr")
    reloaded = _ours(out, "channels_first", size=SIZE + 1)  # epsilon and padding from the file
    assert np.max(np.abs(_predict(reloaded, _images(SIZE + 1), "channels_first") - expected)) <= 1e-4


def test_port_errors(tmp_path, capsys):
    assert port.main([str(tmp_path / "missing.pth"), "--arch", "densenet121", "--out",
                      str(tmp_path / "x.weights.h5")]) == 2
    assert "no such file" in capsys.readouterr().out
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"0123456789abcdef" * 4)
    assert port.main([str(junk), "--arch", "densenet121", "--out",
                      str(tmp_path / "x.weights.h5")]) == 2
    assert "is not a weights file this package reads" in capsys.readouterr().out


def test_weights_for_another_architecture_are_refused(keras_applications_file):
    path, _ = keras_applications_file
    with pytest.raises(ValueError, match="do not fit model 'densenet169'.*block3_layer25"):
        DenseNetImageNet("densenet169", weights=path, input_shape=(SIZE, SIZE, 3))


def test_truncated_file_is_refused(torch_reference, tmp_path):
    path, _, _ = torch_reference
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(path, "rb").read()[:100_000])
    with pytest.raises(Exception, match="(?i)zip|archive|central directory|truncat|failed"):
        _ours(str(truncated))


def test_keras3_file_for_another_model_is_refused(tmp_path):
    small = dict(depth=10, growth_rate=4, bottleneck=True, reduction=0.5)
    path = str(tmp_path / "small.weights.h5")
    DenseNet(**small, input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(ValueError, match="does not fit model"):
        DenseNet(**{**small, "growth_rate": 6}, input_shape=(32, 32, 3), weights=path)


def test_imagenet_argument_errors():
    with pytest.raises(ValueError, match="needs classes=1000"):
        DenseNetImageNet121(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="expect 3 input channels"):
        DenseNetImageNet121(weights="imagenet", input_shape=(224, 224, 1))
    with pytest.raises(ValueError, match="needs a published ImageNet architecture"):
        DenseNet(weights="imagenet")
    with pytest.raises(ValueError, match="No published ImageNet weights for "
                                         "architecture='densenet264'"):
        DenseNetImageNet("densenet264", weights="imagenet")
    with pytest.raises(ValueError, match="weights_source must be one of"):
        DenseNetImageNet121(weights="imagenet", weights_source="timm")
    with pytest.raises(ValueError, match="'imagenet', or the path of an existing weights file"):
        DenseNetImageNet121(weights="imagenet21k")


def test_manifest_covers_every_published_file():
    entries = weights.manifest()
    published = {(e["architecture"], e["source"], e["include_top"]) for e in entries}
    for arch in ("densenet121", "densenet169", "densenet201"):
        assert {(arch, "keras_applications", True), (arch, "keras_applications", False)} <= published
    for arch in ("densenet121", "densenet161", "densenet169"):
        assert {(arch, "original_keras", True), (arch, "original_keras", False)} <= published
    for arch in ("densenet121", "densenet161", "densenet169", "densenet201"):
        assert (arch, "torchvision", True) in published
    assert weights.find_entry("densenet161", include_top=False)["source"] == "original_keras"
    assert weights.find_entry("densenet201", False, "torchvision")["include_top"] is True


class _Server:
    """A loopback HTTP server for a folder, counting the requests it answers."""

    def __init__(self, folder):
        self.requests = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                server.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    running = _Server(served)
    yield served, running
    running.close()


def test_imagenet_download_checks_the_hash_and_caches(server, tmp_path, monkeypatch,
                                                      keras_applications_file):
    import hashlib
    import shutil

    folder, running = server
    path, expected = keras_applications_file
    shutil.copy(path, folder / "d121.h5")
    md5 = hashlib.md5(open(path, "rb").read()).hexdigest()
    entry = dict(architecture="densenet121", source="keras_applications", include_top=True,
                 url=running.url + "d121.h5", file_name="d121.h5", hash_algorithm="md5", hash=md5)
    monkeypatch.setattr(weights, "manifest", lambda: [entry])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    download = functools.partial(weights.download, cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "download", download)
    model = DenseNetImageNet121(weights="imagenet", activation=None, input_shape=(SIZE, SIZE, 3))
    assert np.max(np.abs(model.predict(_images(), verbose=0) - expected)) <= 1e-4
    assert running.requests == 1
    DenseNetImageNet121(weights="imagenet", input_shape=(SIZE, SIZE, 3))
    assert running.requests == 1  # served from the cache


def test_download_refuses_a_wrong_hash(server, tmp_path):
    folder, running = server
    (folder / "w.pth").write_bytes(b"not the published file")
    md5_entry = dict(url=running.url + "w.pth", file_name="w.pth", hash_algorithm="md5",
                     hash="0" * 32)
    with pytest.raises(ValueError, match="(?i)hash"):
        weights.download(md5_entry, cache_dir=str(tmp_path / "c1"))
    prefix_entry = dict(url=running.url + "w.pth", file_name="w.pth",
                        hash_algorithm="sha256_prefix", hash="a639ec97")
    with pytest.raises(ValueError, match="does not start with a639ec97"):
        weights.download(prefix_entry, cache_dir=str(tmp_path / "c2"))
