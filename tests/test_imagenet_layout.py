"""The ImageNet layout: train/ and val/ folders, the ImageNet transforms, files that are
not images, are cut short or fail to decode, top-5 accuracy and the image counts in
metrics.json."""

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


def _broken_header(path):
    """A JPEG signature and end marker around zeros: no decoder reads it (the crop-window
    decode of the ImageNet training transform included)."""
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200) + b"\xff\xd9")


def _corrupt_scan(path, value=100):
    """A JPEG with intact headers, signature and end marker whose scan data begins with
    a second frame header (``FF C0``): libjpeg stops with "two SOF markers"."""
    _jpeg(path, 24, 40, value)
    whole = bytearray(path.read_bytes())
    scan = whole.index(b"\xff\xda")  # start of scan; its header's length follows
    body = scan + 2 + int.from_bytes(whole[scan + 2:scan + 4], "big")
    whole[body:body + 4] = b"\xff\xc0\x00\x11"
    path.write_bytes(bytes(whole))


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
    broken = tmp_path / "train" / CLASSES[2] / "broken.JPEG"
    corrupt = tmp_path / "val" / CLASSES[3] / "corrupt.JPEG"
    _broken_header(broken)
    _corrupt_scan(corrupt)
    run = tmp_path / "run"
    assert cli.main(["train", "--data", train, "--val-data", val, "--transform", "imagenet",
                     "--output", str(run), "--epochs", "1", "--image-size", "16",
                     "--batch-size", "8", "--depth", "10", "--growth-rate", "4",
                     "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "images: 37 train, 13 validation, 13 test" in printed
    assert f"skipped 1 image files cut short (metrics.json lists them): {str(cut)!r}" in printed
    # named once, after the epoch that met them (the test split is the val folder)
    assert printed.count("failed to decode") == 1
    assert ("2 image files failed to decode and were skipped (metrics.json lists them): "
            f"{str(broken)!r}, {str(corrupt)!r}") in printed
    assert "top-5" in printed
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == {"train": 37, "validation": 13, "test": 13}
    assert metrics["skipped_images"] == [str(cut)]
    assert metrics["failed_images"] == [str(broken), str(corrupt)]
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


def test_files_that_fail_to_decode_are_skipped_and_named_in_every_split(tmp_path):
    """JPEGs with their signature and end marker whose header or scan data is broken
    pass the byte checks; each pipeline skips them and its DecodeCheck names them."""
    train, val = _layout(tmp_path, 2, 1)
    broken, corrupt = tmp_path / "train" / CLASSES[0] / "broken.JPEG", tmp_path / "val" / "x.JPEG"
    _broken_header(broken)
    _corrupt_scan(corrupt)
    for path in (broken, corrupt):
        assert data.file_state(str(path)) == "complete"
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.decode_image(path.read_bytes())
    os.replace(corrupt, tmp_path / "val" / CLASSES[1] / "corrupt.JPEG")
    corrupt = tmp_path / "val" / CLASSES[1] / "corrupt.JPEG"
    for transform in ("resize", "imagenet"):
        splits = data.load(train, 16, 4, augment=True, val_dataset=val, transform=transform)
        assert splits.counts == {"train": 13, "validation": 7, "test": 7}
        checks = splits.decode_checks
        assert len(checks["train"].failed()) == 13  # nothing decoded yet
        for _ in range(2):  # marks accumulate over epochs
            assert sum(int(y.shape[0]) for _, y in splits.train) == 12
            assert checks["train"].failed() == [str(broken)]
        assert sum(int(y.shape[0]) for _, y in splits.validation) == 6
        assert checks["validation"] is checks["test"] and checks["test"].failed() == [
            str(corrupt)]


def test_a_shard_reads_and_decodes_only_its_files(tmp_path):
    train, _ = _layout(tmp_path, 3, 0)
    for transform in ("resize", "imagenet"):
        splits = data.load(train, 16, 4, augment=True, val_dataset=train, transform=transform)
        check = splits.decode_checks["train"]
        for index in range(2):
            for batches in (None, 3):  # 3 x 4: the 9 files of the shard, then 3 again
                check.decoded.assign(tf.zeros_like(check.decoded))
                sizes = [int(y.shape[0]) for _, y in splits.train_shard(2, index, 4, batches)]
                assert sizes == ([4, 4, 1] if batches is None else [4, 4, 4])
                decoded = set(check.files) - set(check.failed())
                assert decoded == set(check.files[index::2])  # every other file


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
