"""Every example runs, in a tiny configuration, so that none can rot."""

import os
import runpy
import sys

import pytest

from keras_densenet import DenseNet

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def run_example(name, *argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(os.path.join(EXAMPLES, name), run_name="__main__")


def test_transfer_learning(tmp_path, monkeypatch, capsys):
    run_example("transfer_learning.py", "--image-size", "32", "--epochs", "1",
                "--steps-per-epoch", "2", "--batch-size", "8", "--output", str(tmp_path),
                monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "phase 2: fine-tuning" in out and "test accuracy" in out
    assert os.path.exists(tmp_path / "model.keras")


def test_unfreezing_keeps_the_earlier_blocks_frozen():
    namespace = runpy.run_path(os.path.join(EXAMPLES, "transfer_learning.py"))
    model, backbone = namespace["build"](3, 32, None)
    assert not backbone.trainable_weights
    count = namespace["unfreeze_last_block"](backbone)
    trainable = {w.path.split("/")[0] for w in backbone.trainable_weights}
    assert count == len(trainable) and all(n.startswith(("block4_", "final_")) for n in trainable)


def test_train_cifar_on_the_embedded_data(tmp_path, monkeypatch, capsys):
    run_example("train_cifar.py", "--dataset", "digits", "--epochs", "1", "--depth", "10",
                "--growth-rate", "4", "--output", str(tmp_path / "run"),
                monkeypatch=monkeypatch)
    assert "test error" in capsys.readouterr().out


def test_export_savedmodel(tmp_path, monkeypatch, capsys):
    model_path = str(tmp_path / "m.keras")
    DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5,
             input_shape=(32, 32, 3)).save(model_path)
    run_example("export_savedmodel.py", model_path, str(tmp_path / "exported" / "1"),
                monkeypatch=monkeypatch)
    assert "serving input 'images'" in capsys.readouterr().out


def test_segmentation_reports_mean_iou(monkeypatch, capsys):
    run_example("segmentation.py", "--images", "16", "--size", "32", "--epochs", "1",
                "--growth-rate", "4", "--layers", "1", monkeypatch=monkeypatch)
    assert "mean IoU on 16 held-out images" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")))
def test_every_example_is_tested(name):
    tested = {"transfer_learning.py", "train_cifar.py", "export_savedmodel.py",
              "segmentation.py"}
    assert name in tested, f"examples/{name} has no test in tests/test_examples.py"
