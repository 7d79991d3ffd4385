"""Training: artifacts, resuming after an interruption, recipes, distribution."""

import csv
import json
import os
import subprocess
import sys

import keras
import pytest

from keras_densenet import memory_efficient
from keras_densenet.apps import distribute, run_dir
from keras_densenet.apps import train as train_lib
from keras_densenet.apps.recipes import RECIPES

TINY = RECIPES["digits"].replace(
    model=dict(depth=10, growth_rate=4, bottleneck=True, reduction=0.5),
    image_size=16, epochs=2, batch_size=128)


def _log_epochs(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_training_writes_model_log_curves_and_metrics(tmp_path):
    run = str(tmp_path / "run")
    metrics = train_lib.train(TINY, run, verbose=0)
    assert set(metrics) == {"test_loss", "test_accuracy", "test_top5_accuracy", "images",
                            "skipped_images", "failed_images"}
    assert 0.0 <= metrics["test_accuracy"] <= metrics["test_top5_accuracy"] <= 1.0
    assert metrics["images"] == {"train": 1257, "validation": 180, "test": 360}
    assert metrics["skipped_images"] == [] and metrics["failed_images"] == []
    assert sorted(os.listdir(run)) == ["config.json", "curves.png", "log.csv",
                                       "metrics.json", "model.keras"]
    assert _log_epochs(run) == [0, 1]
    with open(os.path.join(run, "log.csv")) as handle:
        row = next(csv.DictReader(handle))
    assert float(row["images_per_second"]) > 0 and "val_top5_accuracy" in row
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    assert model.output.shape == (None, 10)
    with open(os.path.join(run, "metrics.json")) as handle:
        assert json.load(handle) == metrics


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


def test_resume_finishes_an_interrupted_run(tmp_path):
    run = str(tmp_path / "run")
    recipe = TINY.replace(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(recipe, run, verbose=0, callbacks=[_Interrupt()])
    assert os.listdir(os.path.join(run, "backup")) and not os.path.exists(
        os.path.join(run, "model.keras"))
    train_lib.train(recipe, run, resume=True, verbose=0)
    assert _log_epochs(run) == [0, 1, 2]  # the interrupted epoch is not repeated
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    steps = -(-1257 // recipe.batch_size)  # the 70% of the 1,797 digits trained on
    assert int(model.optimizer.iterations) == 3 * steps  # optimizer state carried over
    assert not os.path.exists(os.path.join(run, "backup"))


def test_cli_trains_in_the_memory_mode_asked_for(tmp_path):
    from keras_densenet.apps import cli

    run = str(tmp_path / "run")
    assert cli.main(["train", "--output", run, "--memory-efficient", "full", "--epochs", "1",
                     "--depth", "10", "--growth-rate", "4", "--image-size", "16",
                     "--batch-size", "128", "--quiet"]) == 0
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    assert isinstance(model.get_layer("block1_layer1_bn2"),
                      memory_efficient.RecomputedDenseLayer)
    assert run_dir.read_run_config(run)["recipe"]["model"]["memory_efficient"] == "full"


def test_resume_in_another_memory_mode(tmp_path, capsys):
    """A run started plain goes on in "full" (as after running out of memory): its
    checkpoint, optimizer state included, loads although "full" orders it otherwise."""
    run = str(tmp_path / "run")
    recipe = TINY.replace(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(recipe, run, verbose=0, callbacks=[_Interrupt()])
    assert train_lib.main(["--output", run, "--resume", "--memory-efficient", "full",
                           "--quiet"]) == 0
    assert "resuming with memory_efficient='full' (the run started with False)" in (
        capsys.readouterr().out)
    assert _log_epochs(run) == [0, 1, 2]
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    assert isinstance(model.get_layer("block1_layer1_bn2"),
                      memory_efficient.RecomputedDenseLayer)
    steps = -(-1257 // recipe.batch_size)
    assert int(model.optimizer.iterations) == 3 * steps  # optimizer state carried over
    assert run_dir.read_run_config(run)["recipe"]["model"]["memory_efficient"] == "full"


def test_existing_runs_are_never_overwritten(tmp_path):
    run = str(tmp_path / "run")
    train_lib.train(TINY.replace(epochs=1), run, verbose=0)
    with pytest.raises(ValueError, match="already holds a run: pass --resume"):
        train_lib.train(TINY, run, verbose=0)
    with pytest.raises(ValueError, match="has already finished"):
        train_lib.train(TINY.replace(epochs=1), run, resume=True, verbose=0)
    other_architecture = TINY.replace(epochs=1, model={**TINY.model, "growth_rate": 6})
    with pytest.raises(ValueError, match="differs in \\['model'\\]"):
        train_lib.train(other_architecture, run, resume=True, verbose=0)
    with pytest.raises(ValueError, match="holds no run to resume"):
        train_lib.train(TINY, str(tmp_path / "empty"), resume=True, verbose=0)


def test_step_schedule_divides_by_ten_at_the_milestones():
    schedule = train_lib.step_schedule(RECIPES["cifar"], steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(1499)) == pytest.approx(0.1)
    assert float(schedule(1501)) == pytest.approx(0.01)  # after epoch 150 of 300
    assert float(schedule(2251)) == pytest.approx(0.001)  # after epoch 225
    imagenet = train_lib.step_schedule(RECIPES["imagenet"], steps_per_epoch=1)
    assert [float(imagenet(s)) for s in (29, 31, 61)] == pytest.approx([0.1, 0.01, 0.001])


def test_paper_recipes():
    cifar = RECIPES["cifar"]
    assert (cifar.epochs, cifar.batch_size, cifar.learning_rate, cifar.momentum,
            cifar.nesterov, cifar.model["weight_decay"]) == (300, 64, 0.1, 0.9, True, 1e-4)
    assert cifar.augment and cifar.flip and cifar.lr_milestones == (0.5, 0.75)
    assert (RECIPES["imagenet"].epochs, RECIPES["imagenet"].batch_size) == (90, 256)
    with pytest.raises(ValueError, match="Unknown recipe fields \\['lr'\\]"):
        cifar.replace(lr=0.2)


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    from keras_densenet.apps import cli

    code = cli.main(["train", "--data", str(tmp_path / "missing"), "--output",
                     str(tmp_path / "run"), "--quiet"])
    assert code == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["train", "--recipe", "imagenet", "--output", str(tmp_path / "r2")]) == 2
    assert "No dataset given" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli.main(["train", "--output", str(tmp_path / "file"), "--quiet"]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert cli.main(["train", "--output", str(tmp_path / "file" / "run"), "--quiet"]) == 2
    assert "cannot be created" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_made_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from keras_densenet.apps import cli

    refused = str(tmp_path / "refused")
    makedirs = os.makedirs

    def refuse_that_folder(path, *args, **kwargs):
        if str(path) == refused:
            raise PermissionError(13, "Permission denied", path)
        return makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", refuse_that_folder)
    assert cli.main(["train", "--epochs", "1", "--output", refused, "--quiet"]) == 2
    assert capsys.readouterr().err.startswith(
        f"keras-densenet train: error: --output {refused!r} cannot be created: "
        "Permission denied.")
    assert not os.path.exists(refused)


def test_distribute_is_validated():
    with pytest.raises(ValueError, match="distribute must be one of"):
        distribute.distribution_strategy("horovod")


MIRRORED_SCRIPT = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_densenet.apps import train
sys.exit(train.main(["--distribute", "mirrored", "--output", sys.argv[1], "--epochs", "1",
                     "--batch-size", "32", "--image-size", "16", "--depth", "10",
                     "--growth-rate", "4", "--quiet"]))
"""


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    run = str(tmp_path / "run")
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, run], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tf.distribute mirrored: 2 replicas, global batch 64" in result.stdout
    assert "test accuracy" in result.stdout
    assert os.path.exists(os.path.join(run, "model.keras"))


def test_fine_tuning_starts_every_layer_but_the_classifier_from_the_weights(tmp_path):
    import numpy as np

    from keras_densenet import DenseNet

    source = DenseNet(**TINY.model, input_shape=(16, 16, 3), classes=7)
    path = str(tmp_path / "pretrained.weights.h5")
    source.save_weights(path)
    model = train_lib.build_model(TINY.replace(weights=path), (16, 16, 3), list("abc"))
    assert model.output.shape == (None, 3)
    for name in ("stem_conv", "block1_layer1_bn1", "final_bn"):
        for ours, theirs in zip(model.get_layer(name).weights, source.get_layer(name).weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours),
                                          keras.ops.convert_to_numpy(theirs))


def test_the_options_and_run_directory_logic_import_no_framework():
    script = ("import sys\n"
              "from keras_densenet.apps import distribute, run_dir, train\n"
              "train.build_parser().parse_args(['--val-data', 'v', '--precision', 'bf16'])\n"
              "loaded = {'keras', 'tensorflow', 'jax', 'torch'} & set(sys.modules)\n"
              "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_run_of_an_earlier_version_resumes(tmp_path):
    """A config.json without the recipe fields added since (val_dataset, transform,
    precision, weights) reads as their defaults: the run resumes."""
    run = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(TINY, run, verbose=0, callbacks=[_Interrupt()])
    config = run_dir.read_run_config(run)
    for field in ("val_dataset", "transform", "precision", "weights"):
        del config["recipe"][field]
    with open(os.path.join(run, "config.json"), "w") as handle:
        json.dump(config, handle)
    assert train_lib.main(["--output", run, "--resume", "--quiet"]) == 0
    assert _log_epochs(run) == [0, 1]


@pytest.mark.slow
def test_train_arch_rdnet_trains_an_rdnet(tmp_path, capsys):
    """--arch rdnet_*: the run trains timm's RDNet layout in the memory mode asked for and
    saves it with its config."""
    from keras_densenet.apps import cli
    from keras_densenet.rdnet import RecomputedSequence

    run = tmp_path / "rdnet"
    assert cli.main(["train", "--arch", "rdnet_tiny", "--memory-efficient", "on", "--epochs",
                     "1", "--image-size", "32", "--batch-size", "32", "--drop-path-rate", "0.1",
                     "--output", str(run), "--quiet"]) == 0
    model = keras.models.load_model(run / "model.keras")
    assert model.densenet_config["published_name"] == "rdnet_tiny"
    assert model.densenet_config["memory_efficient"] is True
    assert isinstance(model.get_layer("stage6_block2_recomputed"), RecomputedSequence)
    assert model.get_layer("stage6_block2_drop_path").rate == pytest.approx(0.1)
    recipe = json.loads((run / "config.json").read_text())["recipe"]
    assert recipe["arch"] == "rdnet_tiny" and recipe["model"]["memory_efficient"] is True
    assert cli.main(["train", "--arch", "rdnet_tiny", "--depth", "10",
                     "--output", str(tmp_path / "refused")]) == 2
    assert "--arch rdnet_tiny takes no DenseNet options (depth)" in capsys.readouterr().err
