"""Issue 11: every failure a one-line error naming the argument or file, every write safe.

One test per probed case (see docs/errors.md for the table of what bad input gets).
Runs are simulated as killed at each instant by removing or truncating files of
a finished run directory, which is what a kill leaves behind.
"""

import csv
import json
import os
import shutil
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_densenet import (DenseNet, DenseNetCIFAR, DenseNetFCN, DenseNetImageNet121,
                            decode_predictions, weights)
from keras_densenet import export as export_lib
from keras_densenet.apps import cli
from keras_densenet.apps import train as train_lib
from keras_densenet.apps.recipes import RECIPES

TINY_NET = dict(depth=10, growth_rate=4, bottleneck=True, reduction=0.5)
TINY = RECIPES["digits"].replace(model=TINY_NET, image_size=8, epochs=2, batch_size=512,
                                 augment=False)


def one_line(error):
    message = str(error.value)
    assert "\n" not in message, message
    return message


# --- builder: silent wrong results and obscure errors -------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(bn_epsilon=0.0), "bn_epsilon"),
    (dict(bn_epsilon=-1e-3), "bn_epsilon"),
    (dict(bn_epsilon=float("nan")), "bn_epsilon"),
    (dict(bottleneck="no"), "bottleneck must be True or False"),
    (dict(include_top="False"), "include_top must be True or False"),
    (dict(stem_type="deep"), "stem_type"),
    (dict(anti_alias=True), "anti_alias"),
    (dict(reduction=0.9, nb_filter=4), "reduction"),
    (dict(reduction="0.5"), "reduction"),
    (dict(weight_decay=float("inf")), "weight_decay"),
    (dict(input_shape=("32", 32, 3)), "input_shape"),
    (dict(nb_dense_block=3, nb_layers_per_block=[2000, 2, 2]), "at most"),
])
def test_builder_refuses_bad_arguments_in_one_line(kwargs, match):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=match) as error:
        DenseNet(**{**TINY_NET, **kwargs})
    one_line(error)
    assert time.perf_counter() - started < 10  # refused up front, never built


def test_numpy_layer_counts_are_taken_as_lists():
    model = DenseNet(nb_dense_block=3, nb_layers_per_block=np.array([1, 2, 1]), growth_rate=4,
                     input_shape=(16, 16, 3), classes=3)
    assert model.densenet_config["architecture"]["nb_layers_per_block"] == [1, 2, 1]


def test_presets_refuse_architecture_arguments():
    with pytest.raises(ValueError, match="depth") as error:
        DenseNetImageNet121(depth=10)
    one_line(error)
    with pytest.raises(ValueError, match="depth"):
        DenseNetCIFAR("densenet40_k12", depth=10)


def test_fcn_needs_its_classes():
    with pytest.raises((ValueError, TypeError), match="classes"):
        DenseNetFCN(input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="classes"):
        DenseNetFCN(input_shape=(32, 32, 3), classes=1, activation="softmax")


def test_any_keras_activation_name_is_accepted():
    model = DenseNet(**TINY_NET, classes=3, input_shape=(16, 16, 3), activation="linear")
    assert model.get_layer("predictions").activation is keras.activations.linear
    with pytest.raises(ValueError, match="activation"):
        DenseNet(**TINY_NET, activation="no-such-activation")


@pytest.mark.parametrize("size", [1, 3])
def test_images_smaller_than_the_stride_name_the_minimum(size):
    model = DenseNet(**TINY_NET, classes=3)  # variable size; halves twice: at least 4 px
    images = np.zeros((1, size, size, 3), "float32")
    for call in (lambda: model(images), lambda: model.predict(images, verbose=0)):
        with pytest.raises(ValueError, match="must be at least 4"):
            call()
    assert model.predict(np.zeros((1, 4, 4, 3), "float32"), verbose=0).shape == (1, 3)


@pytest.mark.parametrize("top", [-1, 0, 1001, 2.0, True])
def test_decode_predictions_top_is_checked(top):
    with pytest.raises(ValueError, match="top must be an integer from 1 to 1000"):
        decode_predictions(np.ones((1, 1000)), top=top)


# --- weights ------------------------------------------------------------------------------

@pytest.fixture
def torch_net():
    torch = pytest.importorskip("torch")
    from keras_densenet.apps.source_models import _torch_densenet  # torchvision's module names

    return torch, _torch_densenet((1, 1, 1, 1), growth_rate=4, nb_filter=8, classes=1000)


def _torch_twin():
    return DenseNet(nb_dense_block=4, nb_layers_per_block=[1, 1, 1, 1], growth_rate=4,
                    nb_filter=8, bottleneck=True, reduction=0.5, subsample_initial_block=True,
                    classes=1000, weights=None, input_shape=(32, 32, 3))


@pytest.mark.parametrize("wrap", [
    lambda sd: {"model": sd, "epoch": 3},  # timm / DeiT
    lambda sd: {"state_dict": sd},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DataParallel
])
def test_pth_checkpoint_wrappers_are_unwrapped(torch_net, tmp_path, wrap):
    torch, net = torch_net
    path = str(tmp_path / "w.pth")
    torch.save(wrap(net.state_dict()), path)
    model = _torch_twin()
    weights.FORMATS["torch"].load_into(model, path)
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  net.features.conv0.weight.detach().numpy().transpose(2, 3, 1, 0))


@pytest.mark.parametrize("content, match", [
    (lambda torch, net: [net.state_dict()], "holds a list, not a state dict"),
    (lambda torch, net: torch.zeros(3), "holds a Tensor, not a state dict"),
    (lambda torch, net: {"epoch": 3, "optimizer": {}}, "holds a dict with keys"),
    (lambda torch, net: torch.nn.Linear(2, 2), "pickled Python objects besides tensors"),
])
def test_pth_without_a_state_dict_says_what_it_holds(torch_net, tmp_path, content, match):
    torch, net = torch_net
    path = str(tmp_path / "w.pth")
    torch.save(content(torch, net), path)
    model = _torch_twin()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=match) as error:
        weights.FORMATS["torch"].load_into(model, path)
    one_line(error)
    assert "truncated or corrupt" not in str(error.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_changed_bytes_in_a_weights_file_are_detected(tmp_path):
    model = DenseNet(**TINY_NET, classes=3)
    path = str(tmp_path / "m.weights.h5")
    weights.save_weights(model, path)
    DenseNet(**TINY_NET, classes=3, weights=path)  # the digest matches
    data = bytearray(open(path, "rb").read())
    rng = np.random.default_rng(0)
    for start in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        damaged = bytearray(data)
        damaged[start:start + 4096] = rng.integers(0, 256, 4096, dtype="uint8").tobytes()
        bad = str(tmp_path / f"bad{start}.weights.h5")
        open(bad, "wb").write(damaged)
        with pytest.raises(ValueError, match="bad.*weights.h5") as error:
            DenseNet(**TINY_NET, classes=3, weights=bad)
        one_line(error)


def test_keras_files_without_a_digest_still_load(tmp_path):
    model = DenseNet(**TINY_NET, classes=3)
    path = str(tmp_path / "plain.weights.h5")
    model.save_weights(path)  # Keras' own writer: no digest
    loaded = DenseNet(**TINY_NET, classes=3, weights=path)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), loaded.get_weights()))


def test_keras3_file_with_a_top_loads_without_it(tmp_path):
    model = DenseNet(**TINY_NET, classes=3)
    path = str(tmp_path / "m.weights.h5")
    weights.save_weights(model, path)
    for pooling in (None, "avg"):
        headless = DenseNet(**TINY_NET, include_top=False, pooling=pooling, weights=path)
        found = headless.get_weights()
        assert len(found) == len(model.get_weights()) - 2
        assert all(np.array_equal(a, b) for a, b in zip(found, model.get_weights()))


# --- export and port: nothing overwritten unasked, never the input -------------------------

def _saved_model_file(tmp_path):
    path = str(tmp_path / "m.keras")
    DenseNet(**TINY_NET, classes=3, input_shape=(16, 16, 3)).save(path)
    return path


def test_export_refuses_its_input_and_existing_outputs(tmp_path, capsys):
    model_path = _saved_model_file(tmp_path)
    original = open(model_path, "rb").read()
    assert cli.main(["export", model_path, model_path, "--format", "onnx"]) == 2
    assert cli.main(["export", model_path, model_path, "--format", "onnx", "--overwrite"]) == 2
    assert open(model_path, "rb").read() == original
    assert "is the input file" in capsys.readouterr().err
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    assert cli.main(["export", model_path, str(out), "--format", "onnx"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert cli.main(["export", model_path, str(tmp_path / "no" / "m.onnx"),
                     "--format", "onnx"]) == 0  # missing parent folders are created
    assert (tmp_path / "no" / "m.onnx").is_file()
    assert cli.main(["export", model_path, str(out), "--format", "onnx", "--overwrite"]) == 0
    assert out.read_bytes()[:7] != b"keep me"
    assert [f for f in os.listdir(tmp_path) if ".tmp-" in f] == []



def test_every_missing_input_is_named_in_one_wording(tmp_path, capsys):
    """Each command's input paths: ``<argument> '<path>': no such <file|folder>.``, before any work."""
    model_path = _saved_model_file(tmp_path)
    missing = str(tmp_path / "missing")
    for argv, named in [
            (["classify", model_path, "--model", missing], f"--model {missing!r}: no such file."),
            (["classify", missing], f"image {missing!r}: no such file or folder."),
            (["export", missing, str(tmp_path / "m.onnx")], f"model {missing!r}: no such file."),
            (["export", model_path, str(tmp_path / "m.xml"), "--format", "openvino",
              "--preprocessing", "torch", "--calibration", model_path],
             f"--calibration {model_path!r}: no such folder."),
            (["port", missing, "--arch", "densenet121", "--out", str(tmp_path / "w.weights.h5")],
             f"source {missing!r}: no such file or folder."),
            (["train", "--data", missing, "--output", str(tmp_path / "run"), "--quiet"],
             f"image folder {missing!r}: no such folder.")]:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, (argv, err)
    assert sorted(os.listdir(tmp_path)) == ["m.keras"]

def test_saved_model_replaces_an_old_folder_whole(tmp_path):
    model = keras.models.load_model(_saved_model_file(tmp_path))
    folder = tmp_path / "sm"
    folder.mkdir()
    (folder / "stale.txt").write_text("from an older export")
    with pytest.raises(FileExistsError, match="already exists"):
        export_lib.export(model, str(folder), "saved_model")
    export_lib.export(model, str(folder), "saved_model", overwrite=True)
    assert not (folder / "stale.txt").exists() and (folder / "saved_model.pb").exists()


def test_onnx_from_jax_without_jax2onnx_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(export_lib.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install jax2onnx") as error:
        export_lib.export(None, str(tmp_path / "m.onnx"), "onnx")
    one_line(error)
    assert not (tmp_path / "m.onnx").exists()


def test_port_refuses_its_source_and_existing_outputs(tmp_path, capsys):
    source = str(tmp_path / "src.weights.h5")
    open(source, "wb").write(b"original")
    assert cli.main(["port", source, "--arch", "densenet121", "--out", source, "--overwrite"]) == 2
    assert "--out" in capsys.readouterr().err and open(source, "rb").read() == b"original"
    out = tmp_path / "out.weights.h5"
    out.write_bytes(b"keep me")
    assert cli.main(["port", source, "--arch", "densenet121", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    missing = str(tmp_path / "no" / "x.weights.h5")
    assert cli.main(["port", source, "--arch", "densenet121", "--out", missing]) == 2
    printed = capsys.readouterr().err
    assert missing in printed and ".tmp-" not in printed


# --- train: validated before anything is written -----------------------------------------

@pytest.mark.parametrize("flags, match", [
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--batch-size", "0"], "batch_size must be a positive integer"),
    (["--image-size", "0"], "image_size must be a positive integer"),
    (["--learning-rate", "-1"], "learning_rate"),
    (["--learning-rate", "nan"], "learning_rate"),
    (["--depth", "7"], "depth"),
])
def test_train_rejects_bad_options_before_writing(tmp_path, capsys, flags, match):
    run = tmp_path / "run"
    assert cli.main(["train", "--output", str(run), "--quiet", *flags]) == 2
    printed = capsys.readouterr().err
    assert match in printed and len(printed.strip().splitlines()) == 1
    assert not run.exists()  # the corrected retry is not refused


def test_train_output_that_cannot_be_a_directory(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    assert cli.main(["train", "--output", str(file), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli.main(["train", "--output", str(file / "run"), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err


def _png(path, value=128):
    tf.io.write_file(str(path), tf.io.encode_png(tf.fill((12, 12, 3), tf.constant(value,
                                                                                  tf.uint8))))


def test_non_images_are_refused_and_cut_images_skipped_and_named(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(10):  # enough for a validation and a test split
            _png(tmp_path / name / f"{i}.png")
    jpeg = tf.io.encode_jpeg(tf.fill((64, 64, 3), tf.constant(200, tf.uint8))).numpy()
    (tmp_path / "cat" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = (tmp_path / "dog" / "0.png").read_bytes()
    (tmp_path / "dog" / "cut.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "dog" / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="1 of 23 files") as error:
        train_lib.train(TINY.replace(dataset=str(tmp_path)), str(tmp_path / "run"), verbose=0)
    assert "text.jpg" in one_line(error)
    assert not (tmp_path / "run").exists()
    (tmp_path / "dog" / "text.jpg").unlink()  # cut files are skipped, never abort a run
    train_lib.train(TINY.replace(dataset=str(tmp_path)), str(tmp_path / "run"), verbose=0)
    with open(tmp_path / "run" / "metrics.json") as handle:
        skipped = json.load(handle)["skipped_images"]
    assert sorted(os.path.basename(path) for path in skipped) == ["cut.jpg", "cut.png"]


# --- train: resumable at every instant ------------------------------------------------------

def _log_epochs(run):
    with open(os.path.join(run, "log.csv")) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch run, and a copy of its backup as it was when fit returned."""
    run = str(tmp_path_factory.mktemp("finished") / "run")

    class KeepBackup(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            shutil.copytree(os.path.join(run, "backup"), run + "-backup")

    train_lib.train(TINY, run, verbose=0, callbacks=[KeepBackup()])
    assert not os.path.exists(os.path.join(run, "backup"))
    return run


def _killed_copy(finished_run, tmp_path, remove=(), with_backup=True):
    run = str(tmp_path / "run")
    shutil.copytree(finished_run, run)
    if with_backup:
        shutil.copytree(finished_run + "-backup", os.path.join(run, "backup"))
    for name in remove:
        os.remove(os.path.join(run, name))
    return run


@pytest.mark.parametrize("removed", [
    ("model.keras", "metrics.json", "curves.png"),  # killed before model.keras
    ("metrics.json", "curves.png"),  # killed after model.keras
    ("curves.png",),  # killed after metrics.json
])
def test_resume_finishes_a_run_killed_while_writing_final_files(finished_run, tmp_path,
                                                                removed):
    run = _killed_copy(finished_run, tmp_path, removed)
    model_time = os.path.getmtime(os.path.join(finished_run, "model.keras"))
    assert train_lib.main(["--output", run, "--resume", "--quiet"]) == 0  # no flags repeated
    assert sorted(os.listdir(run)) == ["config.json", "curves.png", "log.csv",
                                       "metrics.json", "model.keras"]
    assert _log_epochs(run) == [0, 1]  # nothing retrained
    if "model.keras" not in removed:
        assert os.path.getmtime(os.path.join(run, "model.keras")) == model_time
    with open(os.path.join(run, "metrics.json")) as handle:
        assert set(json.load(handle)) == {"test_loss", "test_accuracy", "test_top5_accuracy",
                                          "images", "skipped_images", "failed_images"}


def test_resume_survives_a_kill_while_keras_writes_its_backup(finished_run, tmp_path):
    run = _killed_copy(finished_run, tmp_path, ("model.keras", "metrics.json", "curves.png"))
    open(os.path.join(run, "backup", "training_metadata.json"), "w").close()  # killed mid-write
    train_lib.train(TINY, run, resume=True, verbose=0)
    assert _log_epochs(run) == [0, 1]  # epoch 1 redone from the previous backup, not repeated
    assert os.path.exists(os.path.join(run, "model.keras"))


def test_resume_after_a_kill_before_the_first_backup(finished_run, tmp_path):
    run = _killed_copy(finished_run, tmp_path, ("model.keras", "metrics.json", "curves.png"),
                       with_backup=False)
    train_lib.train(TINY, run, resume=True, verbose=0)
    assert _log_epochs(run) == [0, 1]  # the log is cut back to the restored epoch


def test_resume_refuses_a_finished_run_and_changed_options(finished_run, tmp_path, capsys):
    run = _killed_copy(finished_run, tmp_path, with_backup=False)
    with pytest.raises(ValueError, match="has already finished"):
        train_lib.train(TINY, run, resume=True, verbose=0)
    assert cli.main(["train", "--output", run, "--resume", "--growth-rate", "6", "--quiet"]) == 2
    assert "differs in ['model']" in capsys.readouterr().err
