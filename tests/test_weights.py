"""Loading the three published weight families, checked against their implementations.

The reference files are made offline with random weights and BN statistics in
each family's own format (see ``weight_references``), under names that are not
the published ones (a file named like one is checked against its published
hash). Image sizes are odd and even: 'same' and symmetric stem padding agree on
odd sizes only.
"""

import functools
import hashlib
import http.server
import shutil
import sys
import threading

import numpy as np
import pytest

from keras_densenet import DenseNet, DenseNetImageNet, DenseNetImageNet121, weights
from keras_densenet.apps.source_models import original_keras_densenet

torch = pytest.importorskip("torch")
tf_keras = pytest.importorskip("tf_keras")

from weight_references import (  # noqa: E402  (needs torch and tf_keras)
    images, keras_applications_model, random_torch_densenet, randomize_tf_keras, torch_features,
    torch_logits)

ODD, EVEN = 65, 64
TOLERANCE = 1e-4


def _ours(path, data_format="channels_last", size=ODD, **kwargs):
    shape = (size, size, 3) if data_format == "channels_last" else (3, size, size)
    return DenseNetImageNet121(weights=path, activation=None, input_shape=shape,
                               data_format=data_format, **kwargs)


def _max_difference(model, x, expected):
    """Largest |model(x) - expected|; ``x`` and ``expected`` channels_last."""
    channels_first = model.get_layer("stem_conv").data_format == "channels_first"
    outputs = np.asarray(model(x.transpose(0, 3, 1, 2) if channels_first else x, training=False))
    if channels_first and outputs.ndim == 4:
        outputs = outputs.transpose(0, 2, 3, 1)
    return float(np.max(np.abs(outputs - expected)))


@pytest.fixture(scope="module")
def keras_applications_file(tmp_path_factory):
    """A keras.applications DenseNet121 h5 and tf_keras' logits at sizes ODD and EVEN."""
    reference = randomize_tf_keras(keras_applications_model("densenet121", ODD))
    path = str(tmp_path_factory.mktemp("ka") / "random_densenet121_ka.h5")
    reference.save_weights(path)
    even = keras_applications_model("densenet121", EVEN)
    even.load_weights(path)
    return path, {ODD: reference(images(ODD), training=False).numpy(),
                  EVEN: even(images(EVEN), training=False).numpy()}


@pytest.fixture(scope="module")
def original_keras_file(tmp_path_factory):
    """An original-release DenseNet-BC-121 h5 and its model (even size: 'same' stem matters)."""
    reference = randomize_tf_keras(original_keras_densenet("densenet121",
                                                           input_shape=(EVEN, EVEN, 3)))
    path = str(tmp_path_factory.mktemp("orig") / "random_DenseNet-BC-121.h5")
    reference.save_weights(path)
    return path, reference


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
    """A torchvision-layout DenseNet121 ``.pth`` and its module."""
    reference = random_torch_densenet("densenet121")
    path = str(tmp_path_factory.mktemp("torch") / "random_densenet121.pth")
    torch.save(reference.state_dict(), path)
    return path, reference


@pytest.mark.parametrize("data_format, size", [("channels_last", ODD), ("channels_first", EVEN)])
def test_keras_applications_h5_reproduces_tf_keras(keras_applications_file, data_format, size):
    path, expected = keras_applications_file
    model = _ours(path, data_format, size)
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1.001e-5)
    assert _max_difference(model, images(size), expected[size]) <= TOLERANCE


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_original_keras_release_reproduces_its_model(original_keras_file, data_format):
    path, reference = original_keras_file
    model = _ours(path, data_format, EVEN)
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1.1e-5)
    assert "stem_pad" not in [layer.name for layer in model.layers]  # 'same' stem
    expected = reference(images(EVEN), training=False).numpy()
    assert _max_difference(model, images(EVEN), expected) <= TOLERANCE


@pytest.mark.parametrize("data_format, size", [("channels_last", EVEN), ("channels_first", ODD)])
def test_torch_state_dict_reproduces_torch(torch_reference, data_format, size):
    path, reference = torch_reference
    model = _ours(path, data_format, size)
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1e-5)
    assert _max_difference(model, images(size), torch_logits(reference, images(size))) <= TOLERANCE


def test_old_torchvision_keys_and_safetensors(torch_reference, tmp_path):
    from safetensors.numpy import save_file

    _, reference = torch_reference
    state = reference.state_dict()
    old_style = {key.replace("norm1", "norm.1").replace("conv2", "conv.2"): value
                 for key, value in state.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old_style
    old_path = str(tmp_path / "old.pth")
    torch.save(old_style, old_path)
    safe_path = str(tmp_path / "random_densenet121.safetensors")
    save_file({key: value.numpy() for key, value in state.items()}, safe_path)
    expected = torch_logits(reference, images(ODD))
    for path in (old_path, safe_path):
        assert _max_difference(_ours(path), images(ODD), expected) <= TOLERANCE


def test_top_less_model_takes_the_features_of_a_file_with_top(torch_reference,
                                                              original_keras_file):
    torch_path, torch_module = torch_reference
    model = _ours(torch_path, include_top=False)
    assert _max_difference(model, images(ODD), torch_features(torch_module, images(ODD))) <= TOLERANCE
    original_path, original = original_keras_file
    features = tf_keras.Model(original.input, original.layers[-3].output)  # final ReLU
    model = _ours(original_path, "channels_first", EVEN, include_top=False)
    expected = features(images(EVEN), training=False).numpy()
    assert _max_difference(model, images(EVEN), expected) <= TOLERANCE


@pytest.mark.parametrize("architecture", ["densenet161", "densenet169", "densenet201"])
def test_every_torchvision_architecture_maps_onto_ours(architecture):
    table = weights.pytorch.state_dict_to_table(random_torch_densenet(architecture).state_dict())
    weights.assign(DenseNetImageNet(architecture, input_shape=(32, 32, 3)), table)  # all or nothing


@pytest.mark.parametrize("architecture", ["densenet169", "densenet201"])
def test_every_keras_applications_architecture_maps_onto_ours(architecture, tmp_path):
    path = str(tmp_path / "ka.h5")
    keras_applications_model(architecture, 32, include_top=False).save_weights(path)
    DenseNetImageNet(architecture, weights=path, include_top=False, input_shape=(32, 32, 3))


@pytest.mark.parametrize("architecture", ["densenet161", "densenet169"])
def test_every_original_release_architecture_maps_onto_ours(architecture, tmp_path):
    reference = original_keras_densenet(architecture, include_top=False, input_shape=(32, 32, 3))
    path = str(tmp_path / "no-top.h5")
    reference.save_weights(path)
    DenseNetImageNet(architecture, weights=path, include_top=False, input_shape=(32, 32, 3))


def test_weights_for_another_architecture_are_refused(keras_applications_file, original_keras_file):
    path, _ = keras_applications_file
    with pytest.raises(ValueError, match=r"do not fit model 'densenet169': the model has 338 "
                                         r"weighted layers.*the file 242.*block3_layer25"):
        DenseNetImageNet("densenet169", weights=path, input_shape=(ODD, ODD, 3))
    path, _ = original_keras_file  # matched by order: the first layer of another shape is named
    with pytest.raises(ValueError, match=r"do not fit model 'densenet161'.*stem_conv: model has "
                                         r"\[\(7, 7, 3, 96\)\], file has \[\(7, 7, 3, 64\)\]"):
        DenseNetImageNet("densenet161", weights=path, input_shape=(ODD, ODD, 3))


def test_file_missing_layers_is_refused(torch_reference, tmp_path):
    _, reference = torch_reference
    state = {key: value for key, value in reference.state_dict().items()
             if "denseblock4.denselayer16" not in key}
    path = str(tmp_path / "short.pth")
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"the model has 242 weighted layers.*the file 238.*"
                                         r"block4_layer16_bn1: missing from the file"):
        _ours(path)


def test_truncated_files_are_refused(torch_reference, keras_applications_file, tmp_path):
    for (path, *_), name in ((torch_reference, "cut.pth"), (keras_applications_file, "cut.h5")):
        truncated = tmp_path / name
        truncated.write_bytes(open(path, "rb").read()[:100_000])
        with pytest.raises(ValueError, match="truncated or corrupt"):
            _ours(str(truncated))


def test_keras_model_archive_is_not_taken_for_a_torch_file(tmp_path):
    path = str(tmp_path / "small.keras")
    DenseNet(depth=10, growth_rate=4, bottleneck=True, input_shape=(32, 32, 3)).save(path)
    with pytest.raises(ValueError, match="zip archive but not a PyTorch state dict"):
        _ours(path)


def test_torch_file_without_torch_names_the_extra(torch_reference, monkeypatch):
    path, _ = torch_reference
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install 'keras-densenet\[torch\]'.*port"):
        weights.FORMATS["torch"].read(path, [])


def test_keras3_file_for_another_model_is_refused(tmp_path):
    small = dict(depth=10, growth_rate=4, bottleneck=True, reduction=0.5)
    path = str(tmp_path / "small.weights.h5")
    DenseNet(**small, input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(ValueError, match=r"do not fit model .*stem_conv: model has "
                                         r"\[\(3, 3, 3, 12\)\], file has \[\(3, 3, 3, 8\)\]"):
        DenseNet(**{**small, "growth_rate": 6}, input_shape=(32, 32, 3), weights=path)


def test_keras3_file_of_a_keras_that_recorded_no_layer_names(tmp_path):
    import h5py
    import keras

    small = dict(depth=10, growth_rate=4, bottleneck=True, reduction=0.5, classes=3)
    source = DenseNet(**small, input_shape=(32, 32, 3))
    source.set_weights([np.random.default_rng(i).uniform(0.5, 1.5, w.shape).astype("float32")
                        for i, w in enumerate(source.get_weights())])
    path = str(tmp_path / "keras35.weights.h5")
    source.save_weights(path)
    with h5py.File(path, "a") as h5:  # as Keras before 3.6 wrote them
        for group in weights.keras3._variable_groups(h5).values():
            del group.attrs["name"]
    x = images(32)
    features = keras.Model(source.input, source.get_layer("final_relu").output)
    for include_top, reference in ((True, source), (False, features)):
        # matched by the layer paths of the model's own save_weights, classifier included
        model = DenseNet(**small, include_top=include_top, input_shape=(32, 32, 3), weights=path)
        np.testing.assert_allclose(np.asarray(model(x, training=False)),
                                   np.asarray(reference(x, training=False)), rtol=1e-5)


def test_imagenet_argument_errors():
    with pytest.raises(ValueError, match="needs classes=1000"):
        DenseNetImageNet121(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="needs a published ImageNet architecture"):
        DenseNet(weights="imagenet")
    with pytest.raises(ValueError, match="No published ImageNet weights for "
                                         "architecture='densenet264'"):
        DenseNetImageNet("densenet264", weights="imagenet")
    with pytest.raises(ValueError, match="weights_source must be one of"):
        DenseNetImageNet121(weights="imagenet", weights_source="timm_in22k")
    with pytest.raises(ValueError, match="'imagenet', or the path of an existing weights file"):
        DenseNetImageNet121(weights="imagenet21k")
    with pytest.raises(ValueError, match='weights_source applies only to weights="imagenet"'):
        DenseNetImageNet121(weights=None, weights_source="torchvision")


def test_manifest_covers_every_published_file():
    entries = weights.manifest()
    published = {(e["architecture"], e["source"], e["include_top"]) for e in entries}
    for arch in ("densenet121", "densenet169", "densenet201"):
        assert {(arch, "keras_applications", True), (arch, "keras_applications", False)} <= published
    for arch in ("densenet121", "densenet161", "densenet169"):
        assert {(arch, "original_keras", True), (arch, "original_keras", False)} <= published
    for arch in ("densenet121", "densenet161", "densenet169", "densenet201"):
        assert (arch, "torchvision", True) in published
    for entry in entries:
        if entry["hash_algorithm"] == "none":  # timm's Hub files: no hash known (weights/README.md)
            assert entry["hash"] is None and entry["url"].endswith("/model.safetensors")
            continue
        assert entry["url"].endswith("/" + entry["file_name"])
        assert len(entry["hash"]) == {"md5": 32, "sha256_prefix": 8}[entry["hash_algorithm"]]
        if entry["hash_algorithm"] == "sha256_prefix":
            assert entry["file_name"].endswith(f"-{entry['hash']}.pth")
    assert weights.find_entry("densenet121", True, "keras_applications")["hash"] == (
        "9d60b8095a5708f2dcce2bca79d332c7")
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
    folder, running = server
    path, expected = keras_applications_file
    shutil.copy(path, folder / "d121.h5")
    entry = dict(architecture="densenet121", source="keras_applications", include_top=True,
                 url=running.url + "d121.h5", file_name="d121.h5", hash_algorithm="md5",
                 hash=hashlib.md5(open(path, "rb").read()).hexdigest())
    monkeypatch.setattr(weights.registry, "manifest", lambda: [entry])
    cache = tmp_path / "cache"
    monkeypatch.setattr(weights.registry, "download",
                        functools.partial(weights.download, cache_dir=str(cache)))
    model = _ours("imagenet")
    assert _max_difference(model, images(ODD), expected[ODD]) <= TOLERANCE
    assert running.requests == 1
    assert (cache / "densenet" / "d121.h5").is_file()
    _ours("imagenet", include_top=False)  # a top-less model takes the file with top
    assert running.requests == 1  # served from the cache


def test_download_checks_a_sha256_prefix(server, tmp_path):
    folder, running = server
    content = b"a stand-in for a torchvision file"
    (folder / "w.pth").write_bytes(content)
    entry = dict(url=running.url + "w.pth", file_name="w.pth", hash_algorithm="sha256_prefix",
                 hash=hashlib.sha256(content).hexdigest()[:8])
    path = weights.download(entry, cache_dir=str(tmp_path / "ok"))
    assert open(path, "rb").read() == content


def test_download_refuses_a_wrong_hash(server, tmp_path):
    folder, running = server
    (folder / "w.pth").write_bytes(b"not the published file")
    md5_entry = dict(url=running.url + "w.pth", file_name="w.pth", hash_algorithm="md5",
                     hash="0" * 32)
    with pytest.raises(ValueError, match="(?i)hash"):
        weights.download(md5_entry, cache_dir=str(tmp_path / "c1"))
    prefix_entry = dict(md5_entry, hash_algorithm="sha256_prefix", hash="a639ec97")
    with pytest.raises(ValueError, match="does not start with a639ec97"):
        weights.download(prefix_entry, cache_dir=str(tmp_path / "c2"))
    assert not (tmp_path / "c2" / "densenet" / "w.pth").exists()  # not left in the cache
