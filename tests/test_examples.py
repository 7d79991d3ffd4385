"""Every example runs, in a tiny configuration, so that none can rot."""

import json
import os
import runpy
import sys

import keras
import pytest
from PIL import Image

from keras_densenet import DenseNet
from keras_densenet.apps import classify, cli

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def run_example(name, *argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(os.path.join(EXAMPLES, name), run_name="__main__")


def test_transfer_learning_model_classifies_like_a_trained_one(tmp_path, monkeypatch, capsys):
    run_example("transfer_learning.py", "--quick", "--output", str(tmp_path),
                monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "phase 2: fine-tuning" in out and "test accuracy" in out
    model_path = str(tmp_path / "model.keras")
    Image.new("RGB", (40, 32), (200, 200, 200)).save(tmp_path / "photo.png")
    assert cli.main(["classify", str(tmp_path / "photo.png"), "--model", model_path,
                     "--json", "--top", "10"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(entry["label"] for entry in record["top"]) == [str(d) for d in range(10)]
    settings = classify.serving_settings(keras.models.load_model(model_path))
    assert (settings["size"], settings["resize"], settings["preprocessing"]) == (32, 32, "torch")


def test_unfreezing_keeps_the_earlier_blocks_frozen():
    namespace = runpy.run_path(os.path.join(EXAMPLES, "transfer_learning.py"))
    model, backbone = namespace["build"](["a", "b", "c"], 32, None)
    assert not backbone.trainable_weights
    count = namespace["unfreeze_last_block"](backbone)
    trainable = {w.path.split("/")[0] for w in backbone.trainable_weights}
    assert count == len(trainable) and all(n.startswith(("block4_", "final_")) for n in trainable)


def test_train_cifar_quick_on_the_embedded_data(tmp_path, monkeypatch, capsys):
    run_example("train_cifar.py", "--quick", "--output", str(tmp_path / "run"),
                monkeypatch=monkeypatch)
    assert "test error" in capsys.readouterr().out


def test_train_cifar_offline_is_one_line(tmp_path, monkeypatch, capsys):
    from keras_densenet.apps import data

    def offline(*args, **kwargs):
        raise RuntimeError("Could not load cifar10 through keras.datasets (no network)")

    monkeypatch.setattr(data, "cifar", offline)
    with pytest.raises(SystemExit) as exit_info:
        run_example("train_cifar.py", "--output", str(tmp_path / "run"), monkeypatch=monkeypatch)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "train_cifar.py: error: Could not load cifar10 through keras.datasets (no network)"]


@pytest.mark.parametrize("name", ["train_cifar.py", "transfer_learning.py", "segmentation.py",
                                  "export_savedmodel.py"])
def test_help_shows_the_defaults(name, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_example(name, "--help", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "(default: " in out
    assert name == "export_savedmodel.py" or "--quick" in out


def test_export_savedmodel(tmp_path, monkeypatch, capsys):
    model_path = str(tmp_path / "m.keras")
    DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5,
             input_shape=(32, 32, 3)).save(model_path)
    run_example("export_savedmodel.py", model_path, str(tmp_path / "exported" / "1"),
                monkeypatch=monkeypatch)
    assert "serving input 'images'" in capsys.readouterr().out


def test_segmentation_reports_mean_iou(monkeypatch, capsys):
    run_example("segmentation.py", "--quick", monkeypatch=monkeypatch)
    assert "mean IoU on 16 held-out images" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")))
def test_every_example_is_tested(name):
    tested = {"transfer_learning.py", "train_cifar.py", "export_savedmodel.py",
              "segmentation.py"}
    assert name in tested, f"examples/{name} has no test in tests/test_examples.py"
