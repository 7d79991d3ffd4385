"""keras-densenet validate: top-1/top-5 on a labelled folder, class order, runtimes, errors."""

import json

import numpy as np
import pytest
from PIL import Image

from keras_densenet import DenseNet, preprocess_input, runtime
from keras_densenet.apps import cli, validate
from keras_densenet.apps.images import load_image

CLASS_NAMES = ["fox", "cat", "owl", "ant", "yak", "bee"]
"""Recorded out of alphabetical order: folders must map to these indices, not sorted ones."""
RANKS = (0, 2, 5)
"""Image i goes into the folder of its (RANKS[i % 3] + 1)-th best class: top-1 for one image
in three, top-5 but not top-1 for one, outside the top 5 (of 6) for the third."""


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """``(model path, folder, calibration folder)``: a 6-class 32 px DenseNet recording
    CLASS_NAMES, and 12 PNGs filed by the model's own ranking (expected top-1 1/3, top-5 2/3)."""
    root = tmp_path_factory.mktemp("validate")
    model = DenseNet(depth=10, growth_rate=4, input_shape=(32, 32, 3), classes=6)
    model.update_config(class_names=CLASS_NAMES)
    model.save(root / "model.keras")
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, size=(12, 40, 48, 3), dtype="uint8")
    (root / "calibration").mkdir()
    staging = root / "staging"
    staging.mkdir()
    for index, picture in enumerate(pictures):
        Image.fromarray(picture).save(staging / f"{index}.png")
        Image.fromarray(picture[::-1]).save(root / "calibration" / f"{index}.png")
    # the eval transform the model records: crop 32, resize 32 / 0.875 = 37, bicubic, torch
    crops = np.stack([load_image(staging / f"{i}.png", 37, 32, "bicubic") for i in range(12)])
    scores = model.predict(preprocess_input(crops.astype("float32"), mode="torch"), verbose=0)
    folder = root / "val"
    for index, row in enumerate(scores):
        label = CLASS_NAMES[np.argsort(-row)[RANKS[index % 3]]]
        (folder / label).mkdir(parents=True, exist_ok=True)
        (staging / f"{index}.png").rename(folder / label / f"{index}.png")
    return str(root / "model.keras"), str(folder), str(root / "calibration")


def test_top1_top5_and_agreement_of_keras_and_onnx(labelled, capsys):
    pytest.importorskip("onnxruntime")
    model, folder, _ = labelled
    assert cli.main(["validate", folder, "--model", model, "--runtimes", "onnx", "--json",
                     "--batch-size", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["unreadable"], report["skipped"]) == (12, [], {})
    assert report["transform"] == dict(size=32, resize=37, interpolation="bicubic",
                                       preprocessing="torch")
    keras_row, onnx_row = report["results"]
    assert (keras_row["runtime"], onnx_row["runtime"]) == ("keras", "onnx")
    for row in (keras_row, onnx_row):
        assert row["top1"] == pytest.approx(100 / 3) and row["top5"] == pytest.approx(200 / 3)
        assert row["top1_agreement"] == 1.0 and row["precision"] == "f32"
    assert keras_row["max_abs_diff"] == 0.0 and onnx_row["max_abs_diff"] <= 1e-5


def test_the_table_and_an_unreadable_image_left_out(labelled, tmp_path, capsys):
    import shutil

    model, folder, _ = labelled
    copy = tmp_path / "val"
    shutil.copytree(folder, copy)
    some_class = sorted(path for path in copy.iterdir() if path.is_dir())[0]  # one with images
    (some_class / "broken.png").write_text("not an image")
    assert cli.main(["validate", str(copy), "--model", model]) == 1
    captured = capsys.readouterr()
    assert "broken.png: not a readable image, left out" in captured.err
    header, columns, keras_row = captured.out.splitlines()
    assert header.startswith(f"{copy}: 12 images, ") and "resize 37 bicubic, crop 32" in header
    assert columns.split()[:4] == ["runtime", "precision", "top-1", "top-5"]
    assert keras_row.split() == ["keras", "f32", "33.33", "66.67", "1.0000", "0.00e+00"]


@pytest.mark.slow  # an NNCF quantization and two OpenVINO exports: 16-45 s on 2 shared cores
def test_openvino_runtimes_and_a_precision_this_cpu_lacks(labelled, monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from keras_densenet.apps.classify import load_model

    model, folder, calibration = labelled
    monkeypatch.setattr(runtime, "supports_bf16", lambda *args, **kwargs: False)
    report = validate.validate(load_model(model), validate.labelled_images(folder), folder,
                               ["keras", "openvino-f32", "openvino-bf16", "openvino-int8"],
                               calibration, calibration_size=8)
    rows = {row["runtime"]: row for row in report["results"]}
    assert list(rows) == ["keras", "openvino-f32", "openvino-int8"]
    assert rows["openvino-f32"]["top1_agreement"] == 1.0
    assert rows["openvino-f32"]["max_abs_diff"] <= 1e-5
    assert rows["openvino-int8"]["precision"] == "int8"
    assert 0 <= rows["openvino-int8"]["top1_agreement"] <= 1
    assert 0 < rows["openvino-int8"]["max_abs_diff"] < 1  # softmax outputs, quantized
    assert "bfloat16" in report["skipped"]["openvino-bf16"]


def test_class_order_from_names_wordnet_ids_or_sorted_folders():
    assert validate.class_indices(["owl", "fox"], CLASS_NAMES, 6, "val") == {"owl": 2, "fox": 0}
    assert validate.class_indices(["b", "a", "c"], None, 4, "val") == {"a": 0, "b": 1, "c": 2}
    # ImageNet's validation layout, a subset of its classes: their ImageNet indices
    assert validate.class_indices(["n01443537", "n01440764"], None, 1000, "val") == {
        "n01440764": 0, "n01443537": 1}
    with pytest.raises(ValueError, match="class folder 'c' is not a class of the model "
                                         r"\(classes from the sorted folder names \(3 folders"):
        validate.class_indices(["a", "b", "c"], None, 2, "val")


@pytest.mark.parametrize("arguments, message", [
    (["missing", "--model", "{model}"], "DIR 'missing': no such folder"),
    (["{folder}", "--model", "nowhere.keras"], "--model 'nowhere.keras': no such file"),
    (["{folder}", "--model", "{model}", "--runtimes", "tensorrt"], "--runtimes must be one of"),
    (["{folder}", "--model", "{model}", "--runtimes", "openvino-int8"],
     "--runtimes openvino-int8 needs --calibration DIR"),
    (["{empty}", "--model", "{model}"], "holds no class sub-folders with images"),
    (["{stranger}", "--model", "{model}"], "class folder 'emu' is not a class of the model "
                                           "(classes from its class_names)"),
])
def test_bad_input_is_a_one_line_error(arguments, message, labelled, tmp_path, monkeypatch,
                                       capsys):
    model, folder, _ = labelled
    (tmp_path / "empty").mkdir()
    stranger = tmp_path / "stranger"
    (stranger / "emu").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(stranger / "emu" / "0.png")
    monkeypatch.chdir(tmp_path)
    arguments = [argument.format(model=model, folder=folder, empty="empty", stranger="stranger")
                 for argument in arguments]
    assert cli.main(["validate", *arguments]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
