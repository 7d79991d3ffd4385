"""Every example runs with --quick, as a user runs it (a fresh interpreter, no TensorFlow
start-up lines), so that none can rot."""

import json
import os
import runpy
import subprocess
import sys

import keras
import pytest
from PIL import Image

from keras_densenet import DenseNet
from keras_densenet.apps import classify, cli

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
FRAMEWORK_LOG_MARKERS = ("I0000", "E0000", "W0000", "absl::InitializeLog", "cuInit",
                         "cpu_feature_guard", "oneDNN custom operations")


def run_example(name, *argv):
    """Run ``examples/NAME ARGV`` in a fresh interpreter, as a user would; returns its stdout.

    The example must succeed and print none of TensorFlow's start-up lines.
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # a user's
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *argv],
                            capture_output=True, text=True, timeout=600, env=env,
                            cwd=os.path.join(EXAMPLES, os.pardir))
    assert result.returncode == 0, result.stderr[-3000:]
    noise = [line for line in (result.stdout + result.stderr).splitlines()
             if any(marker in line for marker in FRAMEWORK_LOG_MARKERS)]
    assert not noise, noise
    return result.stdout


def run_in_process(name, *argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(os.path.join(EXAMPLES, name), run_name="__main__")


@pytest.mark.slow
def test_transfer_learning_model_classifies_like_a_trained_one(tmp_path, capsys):
    out = run_example("transfer_learning.py", "--quick", "--output", str(tmp_path))
    assert "phase 2: fine-tuning" in out and "test accuracy" in out
    model_path = str(tmp_path / "model.keras")
    Image.new("RGB", (40, 32), (200, 200, 200)).save(tmp_path / "photo.png")
    assert cli.main(["classify", str(tmp_path / "photo.png"), "--model", model_path,
                     "--json", "--top", "10"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(entry["label"] for entry in record["top"]) == [str(d) for d in range(10)]
    settings = classify.serving_settings(keras.models.load_model(model_path))
    assert (settings["size"], settings["resize"], settings["preprocessing"]) == (32, 32, "torch")


def test_transfer_learning_refuses_to_overwrite_a_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.keras").write_bytes(b"a model")
    with pytest.raises(SystemExit) as exit_info:
        run_in_process("transfer_learning.py", "--quick", "--output", str(tmp_path),
                       monkeypatch=monkeypatch)
    assert exit_info.value.code == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "model.keras").read_bytes() == b"a model"


def test_unfreezing_keeps_the_earlier_blocks_frozen():
    namespace = runpy.run_path(os.path.join(EXAMPLES, "transfer_learning.py"))
    model, backbone = namespace["build"](["a", "b", "c"], 32, None)
    assert not backbone.trainable_weights
    count = namespace["unfreeze_last_block"](backbone)
    trainable = {w.path.split("/")[0] for w in backbone.trainable_weights}
    assert count == len(trainable) and all(n.startswith(("block4_", "final_")) for n in trainable)


@pytest.mark.slow
def test_train_cifar_quick_on_the_embedded_data(tmp_path):
    assert "test error" in run_example("train_cifar.py", "--quick", "--output",
                                       str(tmp_path / "run"))


def test_train_cifar_offline_is_one_line(tmp_path, monkeypatch, capsys):
    from keras_densenet.apps import data

    def offline(*args, **kwargs):
        raise RuntimeError("Could not load cifar10 through keras.datasets (no network)")

    monkeypatch.setattr(data, "cifar", offline)
    with pytest.raises(SystemExit) as exit_info:
        run_in_process("train_cifar.py", "--output", str(tmp_path / "run"),
                       monkeypatch=monkeypatch)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "train_cifar.py: error: Could not load cifar10 through keras.datasets (no network)"]


@pytest.mark.parametrize("name", ["train_cifar.py", "transfer_learning.py", "segmentation.py",
                                  "export_savedmodel.py"])
def test_help_shows_the_defaults(name, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_in_process(name, "--help", monkeypatch=monkeypatch)
    assert "(default: " in capsys.readouterr().out


@pytest.mark.slow
def test_export_savedmodel_quick():
    assert "serving input 'images'" in run_example("export_savedmodel.py", "--quick")


def test_export_savedmodel_of_a_named_model(tmp_path, monkeypatch, capsys):
    model_path = str(tmp_path / "m.keras")
    DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5,
             input_shape=(32, 32, 3)).save(model_path)
    run_in_process("export_savedmodel.py", model_path, str(tmp_path / "exported" / "1"),
                   monkeypatch=monkeypatch)
    assert "serving input 'images'" in capsys.readouterr().out


@pytest.mark.slow
def test_segmentation_reports_mean_iou():
    assert "mean IoU on 16 held-out images" in run_example("segmentation.py", "--quick")


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")))
def test_every_example_is_tested(name):
    tested = {"transfer_learning.py", "train_cifar.py", "export_savedmodel.py",
              "segmentation.py"}
    assert name in tested, f"examples/{name} has no test in tests/test_examples.py"
