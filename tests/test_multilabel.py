"""Multi-label training (``keras-densenet train --labels``) on generated images with 3 marks."""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_densenet import runtime
from keras_densenet.apps import cli
from keras_densenet.apps import train as train_lib
from keras_densenet.apps.data import labeled_images, torch_normalize
from keras_densenet.apps.labels import choose_thresholds
from keras_densenet.apps.recipes import RECIPES, Recipe
from keras_densenet.export import export

MARKS = ("red_square", "green_disc", "blue_bar")
"""The generated images' labels, each present with probability 0.5, independently."""
SMALL = ["--depth", "10", "--growth-rate", "8", "--batch-size", "16", "--image-size", "32",
         "--quiet"]


def make_marked_images(folder, count=240, size=48, seed=0):
    """``count`` PNGs in ``folder`` with random background noise and any of 3 marks (a red
    square top-left, a green disc bottom-right, a blue bar in the middle), and their
    ``labels.csv`` in the NIH ChestX-ray14 layout; returns ``{file name: set of marks}``."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    rows, cols = np.mgrid[:size, :size]
    marks = {}
    for i in range(count):
        image = rng.integers(0, 120, (size, size, 3)).astype("uint8")
        present = rng.random(3) < 0.5
        if present[0]:
            image[4:16, 4:16] = (230, 20, 20)
        if present[1]:
            image[(rows - 36) ** 2 + (cols - 36) ** 2 <= 36] = (20, 230, 20)
        if present[2]:
            image[21:27, 10:38] = (20, 20, 230)
        name = f"image{i:03d}.png"
        Image.fromarray(image).save(os.path.join(folder, name))
        marks[name] = {mark for mark, shown in zip(MARKS, present) if shown}
    with open(os.path.join(folder, "labels.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image Index", "Finding Labels", "Patient ID"])
        writer.writerows((name, "|".join(sorted(found)) or "No Finding", i)
                         for i, (name, found) in enumerate(marks.items()))
    return marks


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(image folder, run folder, marks)`` of a 10-epoch multi-label run."""
    root = tmp_path_factory.mktemp("multilabel")
    images, run = str(root / "images"), str(root / "run")
    marks = make_marked_images(images)
    keras.utils.set_random_seed(0)
    assert train_lib.main(["--data", images, "--labels", os.path.join(images, "labels.csv"),
                           "--output", run, "--epochs", "10", *SMALL]) == 0
    return images, run, marks


@pytest.mark.slow
def test_multi_label_run_reaches_the_auroc_bar(trained):
    _, run, _ = trained
    with open(os.path.join(run, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert set(metrics) == {"test_loss", "test_mean_auroc", "test_auroc", "images",
                            "skipped_images", "failed_images"}
    assert sorted(metrics["test_auroc"]) == sorted(MARKS)
    assert metrics["test_mean_auroc"] >= 0.9  # the bar `multi-label`
    assert metrics["test_mean_auroc"] == pytest.approx(np.mean(list(
        metrics["test_auroc"].values())))
    assert metrics["images"] == {"train": 168, "validation": 24, "test": 48}
    with open(os.path.join(run, "log.csv")) as handle:
        columns = next(csv.DictReader(handle)).keys()
    assert {"auroc", "val_auroc", "loss", "val_loss"} <= set(columns)
    assert not any("accuracy" in column for column in columns)


@pytest.mark.slow
def test_the_saved_model_records_sigmoid_outputs_and_validation_thresholds(trained):
    images, run, _ = trained
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    config = model.densenet_config
    assert config["multi_label"] is True and config["class_names"] == sorted(MARKS)
    validation = labeled_images(os.path.join(images, "labels.csv"), images, 32, 16).validation
    targets = np.concatenate([labels for _, labels in validation.as_numpy_iterator()])
    assert targets.shape == (24, 3)
    assert config["thresholds"] == pytest.approx(
        choose_thresholds(targets, model.predict(validation, verbose=0)), abs=1e-5)
    assert model.get_layer("predictions").activation is keras.activations.sigmoid


@pytest.mark.slow
def test_classify_prints_the_labels_above_their_thresholds(trained, capsys):
    images, run, marks = trained
    image = os.path.join(images, "image000.png")
    capsys.readouterr()
    assert cli.main(["classify", image, "--model", os.path.join(run, "model.keras"),
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scores = {row["label"]: row for row in result["scores"]}
    assert set(scores) == set(MARKS)
    assert result["labels"] == sorted(name for name, row in scores.items()
                                      if row["score"] >= row["threshold"])
    assert cli.main(["classify", image, "--model", os.path.join(run, "model.keras")]) == 0
    assert f"labels: {', '.join(result['labels']) or '(none)'}" in capsys.readouterr().out


@pytest.mark.slow
def test_onnx_export_and_the_runtime_serve_the_sigmoid_scores(trained, tmp_path):
    images, run, _ = trained
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    batch = np.stack([np.asarray(Image.open(os.path.join(images, f"image{i:03d}.png")).resize(
        (32, 32), Image.BILINEAR), "float32") for i in range(4)])
    inputs = np.asarray(torch_normalize(batch))
    expected = model.predict(inputs, verbose=0)
    served = runtime.load(export(model, str(tmp_path / "multilabel.onnx"), "onnx")).predict(inputs)
    np.testing.assert_allclose(served, expected, atol=1e-4)
    assert ((served > 0) & (served < 1)).all()


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_resume_reads_the_labels_from_config_json(tmp_path):
    images = str(tmp_path / "images")
    make_marked_images(images, count=40, size=32)
    recipe = RECIPES["digits"].replace(
        model=dict(depth=10, growth_rate=4, bottleneck=True, reduction=0.5), image_size=16,
        epochs=2, batch_size=16, dataset=images,
        labels=os.path.join(images, "labels.csv"))
    run = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(recipe, run, verbose=0, callbacks=[_Interrupt()])
    assert train_lib.main(["--output", run, "--resume", "--quiet"]) == 0
    with open(os.path.join(run, "metrics.json")) as handle:
        assert "test_mean_auroc" in json.load(handle)
    assert keras.models.load_model(os.path.join(run, "model.keras")).densenet_config[
        "multi_label"] is True


def test_a_config_json_without_the_label_fields_still_loads():
    fields = dataclasses.asdict(RECIPES["digits"])
    del fields["labels"], fields["labels_layout"]
    assert Recipe.from_dict(json.loads(json.dumps(fields))) == RECIPES["digits"]


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return str(path)


def test_bad_labels_are_one_line_errors_before_a_run_folder_exists(tmp_path):
    images = str(tmp_path / "images")
    make_marked_images(images, count=4, size=16)
    run = str(tmp_path / "run")
    no_column = _write_csv(tmp_path / "a.csv", ["Image", "Finding Labels"],
                           [["image000.png", "red_square"]])
    missing = _write_csv(tmp_path / "b.csv", ["Image Index", "Finding Labels"],
                         [["image000.png", "red_square"], ["gone.png", "blue_bar"]])
    cases = [
        (["--data", images, "--labels", no_column], r"no column 'Image Index' \(set it with "
                                                    r"--image-column\)"),
        (["--data", images, "--labels", no_column, "--image-column", "Image",
          "--labels-column", "Findings"], r"no column 'Findings' \(set it with --labels-column"),
        (["--data", images, "--labels", missing], r"1 image\(s\) missing from .*gone\.png"),
        (["--labels", missing], r"--labels needs --data IMAGE_FOLDER"),
        (["--data", images, "--labels", missing, "--val-data", images],
         r"--labels needs --data IMAGE_FOLDER .* and no --val-data"),
        (["--data", images, "--labels", missing, "--label-separator", ""],
         r"--label-separator must not be empty"),
    ]
    for argv, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            train_lib.main([*argv, "--output", run, "--quiet"])
        assert "\n" not in str(error.value)
        assert not os.path.exists(run)
