"""Weight files that must not load: non-finite values, in every format, and files the
manifest lists whose bytes are not the published ones.

The files are small nets written by each format's own writer (``small_weight_files``);
the manifest is extended in each test to list a file made here with its real hash.
"""

import hashlib
import os
import shutil

import numpy as np
import pytest

from keras_densenet import DenseNet, weights

pytest.importorskip("torch")
pytest.importorskip("tf_keras")
pytest.importorskip("keras_hub")
pytest.importorskip("safetensors")

import small_weight_files as files  # noqa: E402  (needs the packages above)


def _message(raised):
    message = str(raised.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("fmt, value, where", [
    ("torch", np.nan, "kernel"), ("torch", np.inf, "variance"), ("safetensors", np.inf, "kernel"),
    ("keras_applications", np.nan, "variance"), ("original_keras", -np.inf, "kernel"),
    ("keras_hub", np.nan, "kernel"), ("keras3", np.nan, "variance")])
def test_a_non_finite_weight_is_refused_before_any_is_assigned(tmp_path, fmt, value, where):
    path, arguments = files.write(fmt, tmp_path, poison=(value, where))
    plan = weights.resolve(path, architecture=None, include_top=True, classes=files.CLASSES)
    assert plan.file_format == fmt
    model = DenseNet(**arguments, input_shape=(32, 32, 3), bn_epsilon=plan.bn_epsilon,
                     stem_padding=plan.stem_padding)
    before = model.get_weights()
    with pytest.raises(ValueError) as raised:
        weights.load(model, plan)
    message = _message(raised)
    assert repr(path) in message and files.WHERE[where] in message, message
    assert "1 non-finite value (NaN or infinity)" in message
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    with pytest.raises(ValueError, match=r"non-finite value .* in " + files.WHERE[where]):
        DenseNet(**arguments, input_shape=(32, 32, 3), weights=path)


def _flip_one_byte(path):
    """Flip the bits of the byte in the middle of ``path`` (inside the arrays' data)."""
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _hash(path, algorithm):
    digest = hashlib.new("md5" if algorithm == "md5" else "sha256", open(path, "rb").read())
    return digest.hexdigest()[:8] if algorithm == "sha256_prefix" else digest.hexdigest()


@pytest.fixture
def listed(monkeypatch):
    """``listed(path, algorithm, by)``: the manifest lists ``path`` with its real hash, by
    its file name (``by="name"``) or by its size under another name (``by="size"``)."""
    entries = list(weights.manifest())

    def add(path, algorithm, by):
        entry = dict(architecture="densenet121", source="torchvision", include_top=True,
                     url="https://example.invalid/" + os.path.basename(path),
                     file_name=os.path.basename(path) if by == "name" else "published.bin",
                     hash_algorithm=algorithm, hash=_hash(path, algorithm))
        if by == "size":
            entry["size"] = os.path.getsize(path)
        entries.append(entry)
        monkeypatch.setattr(weights.registry, "manifest", lambda: entries)
        return entry

    return add


@pytest.mark.parametrize("fmt, algorithm, by", [
    ("keras_applications", "md5", "name"), ("torch", "sha256_prefix", "name"),
    ("safetensors", "sha256", "size"), ("torch", "md5", "size")])
def test_a_listed_file_with_one_byte_flipped_is_refused(tmp_path, listed, fmt, algorithm, by):
    path, arguments = files.write(fmt, tmp_path)
    entry = listed(path, algorithm, by)
    DenseNet(**arguments, input_shape=(32, 32, 3), weights=path)  # the published bytes load
    _flip_one_byte(path)
    with pytest.raises(ValueError) as raised:
        DenseNet(**arguments, input_shape=(32, 32, 3), weights=path)
    message = _message(raised)
    assert repr(path) in message
    assert f"has the {by} of the published {entry['file_name']}" in message
    assert f"expected {algorithm} {entry['hash']}, found " in message
    assert _hash(path, algorithm) in message


def test_a_file_in_a_keras_hub_preset_is_checked_too(tmp_path, listed):
    folder, arguments = files.write("keras_hub", tmp_path)
    listed(os.path.join(folder, "model.weights.h5"), "sha256", "size")
    _flip_one_byte(os.path.join(folder, "model.weights.h5"))
    with pytest.raises(ValueError, match=r"model\.weights\.h5' has the size of the published "):
        DenseNet(**arguments, input_shape=(32, 32, 3), weights=folder)


def test_a_file_named_like_a_torchvision_file_must_have_its_hash(tmp_path):
    path, arguments = files.write("torch", tmp_path)
    renamed = str(tmp_path / "densenet121-a639ec97.pth")  # the real manifest's entry
    shutil.copy(path, renamed)
    with pytest.raises(ValueError, match=r"expected sha256_prefix a639ec97, found sha256 "
                                         + _hash(path, "sha256")):
        DenseNet(**arguments, input_shape=(32, 32, 3), weights=renamed)


def test_entries_without_a_published_hash_are_not_checked(tmp_path, listed):
    path, arguments = files.write("safetensors", tmp_path)
    entry = listed(path, "md5", "name")
    entry.update(hash_algorithm="none", hash=None)  # as timm's Hub files are recorded
    _flip_one_byte(path)
    weights.registry.verify_published(path)  # nothing to verify against: it passes
