"""The ImageNet layout: train/ and val/ folders, the ImageNet transforms, files that are
not images or are cut short, top-5 accuracy and the image counts in metrics.json."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_densenet.apps import cli
from keras_densenet.apps import data

CLASSES = [f"n{i:08d}" for i in range(6)]  # more than 5: top-5 accuracy is reported


def _jpeg(path, height, width, value, seed=0):
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(value, 20, (height, width, 3)), 0, 255).astype("uint8")
    tf.io.write_file(str(path), tf.io.encode_jpeg(pixels))


def _layout(root, train_per_class=6, val_per_class=2):
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for i in range(count):
                _jpeg(root / split / name / f"{i}.JPEG", 24 + 4 * i, 40, 40 * c, seed=i)
    return str(root / "train"), str(root / "val")


def test_train_and_val_folders_with_a_cut_jpeg(tmp_path, capsys):
    train, val = _layout(tmp_path)
    whole = (tmp_path / "train" / CLASSES[0] / "0.JPEG").read_bytes()
    cut = tmp_path / "train" / CLASSES[1] / "cut.JPEG"
    cut.write_bytes(whole[: len(whole) // 2])
    run = tmp_path / "run"
    assert cli.main(["train", "--data", train, "--val-data", val, "--transform", "imagenet",
                     "--output", str(run), "--epochs", "1", "--image-size", "16",
                     "--batch-size", "8", "--depth", "10", "--growth-rate", "4",
                     "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "images: 36 train, 12 validation, 12 test" in printed
    assert f"skipped 1 image files cut short (metrics.json lists them): {str(cut)!r}" in printed
    assert "top-5" in printed
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == {"train": 36, "validation": 12, "test": 12}
    assert metrics["skipped_images"] == [str(cut)]
    assert 0 <= metrics["test_accuracy"] <= metrics["test_top5_accuracy"] <= 1
    with open(run / "log.csv") as handle:
        assert {"val_accuracy", "val_top5_accuracy", "images_per_second"} <= set(
            next(csv.DictReader(handle)))
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["val_dataset"] == val and config["recipe"]["transform"] == "imagenet"


def test_a_file_that_is_no_image_is_refused_before_anything_is_decoded(tmp_path, capsys):
    train, val = _layout(tmp_path, 2, 1)
    (tmp_path / "val" / CLASSES[2] / "notes.JPEG").write_text("not an image")
    run = tmp_path / "run"
    assert cli.main(["train", "--data", train, "--val-data", val, "--output", str(run),
                     "--quiet"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "notes.JPEG" in error
    assert not run.exists()


def test_val_folder_classes_must_be_training_classes(tmp_path):
    train, val = _layout(tmp_path, 2, 1)
    os.makedirs(tmp_path / "val" / "extra")
    with pytest.raises(ValueError, match="class sub-folders the training data lacks"):
        data.load(train, 16, 4, val_dataset=val)
    with pytest.raises(ValueError, match="--val-data is for image folders"):
        data.load("digits", 16, 4, val_dataset=val)


def test_file_state_reads_only_the_ends(tmp_path):
    _jpeg(tmp_path / "a.jpg", 20, 20, 100)
    tf.io.write_file(str(tmp_path / "a.png"), tf.io.encode_png(tf.zeros((9, 9, 3), tf.uint8)))
    for name in ("a.jpg", "a.png"):
        whole = (tmp_path / name).read_bytes()
        (tmp_path / f"cut-{name}").write_bytes(whole[: len(whole) - 20])
        assert data.file_state(str(tmp_path / name)) == "complete"
        assert data.file_state(str(tmp_path / f"cut-{name}")) == "cut"
    (tmp_path / "text.jpg").write_text("hello")
    assert data.file_state(str(tmp_path / "text.jpg")) == "not an image"


def test_a_file_that_fails_to_decode_in_training_is_dropped(tmp_path):
    """A JPEG with both its signature and its end marker but a broken header passes the
    check; training drops it instead of stopping."""
    train, val = _layout(tmp_path, 2, 1)
    (tmp_path / "train" / CLASSES[0] / "broken.JPEG").write_bytes(
        b"\xff\xd8\xff\xe0" + bytes(200) + b"\xff\xd9")
    for transform in ("resize", "imagenet"):
        splits = data.load(train, 16, 4, augment=True, val_dataset=val, transform=transform)
        assert splits.counts["train"] == 13
        assert sum(int(y.shape[0]) for _, y in splits.train) == 12


def test_the_evaluation_transform_resizes_the_shorter_side_and_crops_the_center():
    # 40 x 80: left quarter 0, middle half 255, right quarter 0
    image = np.zeros((40, 80, 3), "uint8")
    image[:, 20:60] = 255
    encoded = tf.io.encode_png(image)
    out = data._center_crop(encoded, 14).numpy()  # shorter side to 16 (14 / 0.875), 16 x 32
    assert out.shape == (14, 14, 3)
    # the crop spans columns 9-22 of 32: inside the white middle (8-23)
    assert out.min() > 200
    assert data._resize_whole(encoded, 14).numpy()[:, 0].max() < 50  # the whole width kept
