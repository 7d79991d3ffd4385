"""Datasets: the embedded digits and image folders, with their errors."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_densenet.apps import data
from keras_densenet.preprocessing import preprocess_input


def test_digits_are_rgb_images_split_70_10_20():
    (x_train, y_train), (x_val, y_val), (x_test, y_test), names = data.digits(image_size=24)
    assert x_train.shape == (1257, 24, 24, 3) and x_test.shape == (360, 24, 24, 3)
    assert x_val.shape == (180, 24, 24, 3) and set(np.unique(y_val)) == set(range(10))
    assert 0.0 <= x_train.min() and x_train.max() <= 255.0 and x_train.max() > 200
    assert names == [str(d) for d in range(10)]
    assert set(np.unique(y_test)) == set(range(10))  # stratified


def test_pipeline_normalizes_like_preprocess_input():
    splits = data.load("digits", image_size=16, batch_size=8, augment=False)
    images, labels = next(iter(splits.test))
    assert images.shape == (8, 16, 16, 3) and labels.dtype == tf.int32
    *_, (x_test, _), _ = data.digits(image_size=16)
    np.testing.assert_allclose(images.numpy(), preprocess_input(x_test[:8]), atol=1e-5)
    assert splits.image_shape == (16, 16, 3)


def test_augmentation_pads_and_crops_each_image_independently():
    images = tf.ones((16, 8, 8, 3)) * 255.0
    out = data._pad_crop_flip(images, pad=2, flip=True, seed=0).numpy()
    assert out.shape == (16, 8, 8, 3)
    zero_counts = {int((image == 0).sum()) for image in out}
    assert len(zero_counts) > 1  # different shifts per image


def _write_png(path, height=12, width=12, channels=3, value=128):
    pixels = tf.fill((height, width, channels), tf.constant(value, tf.uint8))
    tf.io.write_file(str(path), tf.io.encode_png(pixels))


def test_image_folder_with_mixed_channels_becomes_rgb(tmp_path):
    for name, channels in (("cat", 1), ("dog", 4)):
        os.makedirs(tmp_path / name)
        for i in range(5):
            _write_png(tmp_path / name / f"{i}.png", channels=channels)
    splits = data.load(str(tmp_path), image_size=16, batch_size=4)
    assert splits.class_names == ["cat", "dog"]
    images, _ = next(iter(splits.train))
    assert images.shape[1:] == (16, 16, 3)
    # 10 images: 7 train, 1 validation, 2 test, the same ones in every epoch
    sizes = [sum(int(tf.shape(y)[0]) for _, y in split)
             for split in (splits.train, splits.validation, splits.test)]
    assert sizes == [7, 1, 2]
    first = [y.numpy().tolist() for _, y in splits.test]
    assert [y.numpy().tolist() for _, y in splits.test] == first


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="image folder .*: no such folder"):
        data.load(str(tmp_path / "missing"), 16, 4)
    os.makedirs(tmp_path / "a")
    with pytest.raises(ValueError, match="holds no images"):
        data.load(str(tmp_path), 16, 4)
    _write_png(tmp_path / "a" / "0.png")
    with pytest.raises(ValueError, match="single class \\('a'\\)"):
        data.load(str(tmp_path), 16, 4)
    os.makedirs(tmp_path / "b")
    (tmp_path / "b" / "notes.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="cannot be decoded as images.*notes.jpg"):
        data.load(str(tmp_path), 16, 4)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="dataset must be 'digits', 'cifar10'"):
        data.load("mnist", 16, 4)


def test_decode_failures_are_named_once_each(capsys):
    files = [f"{i}.jpg" for i in range(13)]
    checks = {"train": data.DecodeCheck(files), "validation": data.DecodeCheck(files[:1])}
    checks["train"].decoded.assign(tf.constant([1.0] * 12 + [0.0]))  # 12.jpg never decoded
    failures = data.DecodeFailures(checks)
    for epoch in range(2):
        failures.on_epoch_end(epoch)
    assert capsys.readouterr().out == (
        "2 image files failed to decode and were skipped (metrics.json lists them): "
        "'12.jpg', '0.jpg'\n")
    failures.report(files)  # 11 not named before: the first 10 shown
    printed = capsys.readouterr().out
    assert printed.startswith("11 image files") and printed.endswith("'10.jpg' and 1 more\n")
    assert failures.failed == ["12.jpg", "0.jpg", *files[1:12]]


def test_a_shard_with_a_batch_count_runs_exactly_that_many_full_batches():
    splits = data.load("digits", image_size=8, batch_size=16)  # 1257 training images
    shard = splits.train_shard(2, 1, 8, batches=79)  # 628 images: 632 needed
    for _ in range(2):
        assert [int(y.shape[0]) for _, y in shard] == [8] * 79
    assert [int(y.shape[0]) for _, y in splits.train_shard(2, 1, 8)][-1] == 4
