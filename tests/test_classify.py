"""keras-densenet classify: any model this package makes, its eval transform, --json, errors."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from keras_densenet import DenseNet, preprocess_input
from keras_densenet.apps import classify, cli, images
from keras_densenet.apps import train as train_lib
from keras_densenet.apps.recipes import RECIPES

skimage_data = pytest.importorskip("skimage.data")

TINY = RECIPES["digits"].replace(
    model=dict(depth=10, growth_rate=4, bottleneck=True, reduction=0.5),
    image_size=16, epochs=1, batch_size=128)


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """The model.keras that `keras-densenet train` writes, for a tiny recipe (1 epoch)."""
    run = tmp_path_factory.mktemp("run") / "digits"
    train_lib.train(TINY, str(run), verbose=0)
    return str(run / "model.keras")


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory):
    """Three 16x16 PNG digits (as the tiny model was trained on) and a file that is no image."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    bunch = load_digits()
    for index in (0, 1, 2):
        pixels = (bunch.images[index] * (255 / 16)).astype("uint8")
        Image.fromarray(pixels).resize((16, 16), Image.BILINEAR).save(folder / f"{index}.png")
    (folder / "notes.png").write_text("not an image")
    return folder


def test_classify_a_freshly_trained_model_with_json(trained_model, digit_images, capsys):
    code = cli.main(["classify", str(digit_images), "--model", trained_model, "--json",
                     "--top", "3"])
    captured = capsys.readouterr()
    assert code == 1  # notes.png failed, the three digits were classified
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["path"].rsplit("/", 1)[-1] for r in records] == ["0.png", "1.png", "2.png",
                                                               "notes.png"]
    for record in records[:3]:
        assert [sorted(entry) for entry in record["top"]] == [["index", "label", "score"]] * 3
        assert all(entry["label"] == str(entry["index"]) for entry in record["top"])  # digits
        scores = [entry["score"] for entry in record["top"]]
        assert scores == sorted(scores, reverse=True) and 0 <= scores[0] <= 1
    assert "not a readable image" in records[3]["error"]
    assert "notes.png: not a readable image" in captured.err


def test_classify_feeds_the_model_as_it_was_trained(trained_model, digit_images):
    """The recipe's eval transform: 16 px, no crop (crop_pct 1), torch preprocessing."""
    import keras

    model = keras.models.load_model(trained_model)
    settings = classify.serving_settings(model)
    assert (settings["size"], settings["resize"], settings["preprocessing"],
            settings["interpolation"]) == (16, 16, "torch", "bilinear")
    assert settings["class_names"] == [str(d) for d in range(10)]
    path = str(digit_images / "1.png")
    [(_, predictions, error)] = classify.classify([path], settings, classify.keras_scores(model),
                                                  top=10)
    pixels = np.asarray(Image.open(path).convert("RGB"))[None]
    expected = model.predict(preprocess_input(pixels), verbose=0)[0]
    got = {index: score for _, index, score in predictions}
    np.testing.assert_allclose([got[i] for i in range(10)], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="--crop 24: this model takes 16x16 images only"):
        classify.serving_settings(model, crop=24)


@pytest.fixture(scope="module")
def imagenet_like_model(tmp_path_factory):
    """A tiny 1000-class model that takes any image size (halves it 3 times)."""
    path = str(tmp_path_factory.mktemp("m") / "imagenet_like.keras")
    DenseNet(nb_dense_block=2, nb_layers_per_block=1, growth_rate=4, nb_filter=8,
             subsample_initial_block=True, classes=1000).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(skimage_data.camera()).save(folder / "camera.png")  # grayscale
    return folder


def test_imagenet_names_and_crop_for_a_model_of_any_size(imagenet_like_model, photos, capsys):
    assert cli.main(["classify", str(photos), "--model", imagenet_like_model, "--crop", "32"]) == 0
    out = capsys.readouterr().out
    assert "astronaut.png" in out and "camera.png" in out and out.count("  5. ") == 2
    import keras

    settings = classify.serving_settings(keras.models.load_model(imagenet_like_model), crop=32)
    assert settings["size"] == 32 and settings["resize"] == round(32 / 0.875)
    assert settings["class_names"][1] == "goldfish"


@pytest.mark.parametrize("argv, message", [
    (["--crop", "4"], "--crop 4 is too small: this model halves the image 3 times, so it "
                      "needs at least 8 pixels."),
    (["--crop", "0"], "--crop must be a positive integer; got 0."),
    (["--top", "-1"], "--top must be a positive integer; got -1."),
    (["--crop", "64", "--resize", "32"], "--resize 32 is smaller than the 64-pixel crop."),
])
def test_bad_sizes_are_one_line_errors(imagenet_like_model, photos, argv, message, capsys):
    assert cli.main(["classify", str(photos), "--model", imagenet_like_model, *argv]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert message in line and line.startswith("keras-densenet classify: error:")


def test_a_head_without_names_is_numbered(tmp_path, photos, capsys):
    path = str(tmp_path / "three.keras")
    DenseNet(depth=7, growth_rate=4, classes=3, input_shape=(32, 32, 3)).save(path)
    assert cli.main(["classify", str(photos / "astronaut.png"), "--model", path, "--json"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(entry["label"] for entry in record["top"]) == ["class 0", "class 1", "class 2"]


def test_crop_is_refused_for_a_model_of_fixed_size(tmp_path, photos, capsys):
    path = str(tmp_path / "fixed.keras")
    DenseNet(depth=7, growth_rate=4, classes=3, input_shape=(32, 32, 3)).save(path)
    assert cli.main(["classify", str(photos), "--model", path, "--crop", "48"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("keras-densenet classify: error: --crop 48: this model takes 32x32 "
                           "images only; leave --crop out.")


def test_a_decompression_bomb_is_reported_and_the_run_goes_on(imagenet_like_model, tmp_path,
                                                              monkeypatch, capsys):
    Image.new("RGB", (40, 40)).save(tmp_path / "small.png")
    Image.new("RGB", (400, 400)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 400x400 is over twice this
    assert cli.main(["classify", str(tmp_path), "--model", imagenet_like_model,
                     "--crop", "32"]) == 1
    captured = capsys.readouterr()
    assert "bomb.png: refused, too many pixels to decode safely" in captured.err
    assert "small.png" in captured.out and "  5. " in captured.out


def test_load_image_resizes_the_shorter_side_then_center_crops(tmp_path):
    pixels = np.zeros((300, 600, 3), dtype="uint8")
    pixels[:, 300:] = 255  # right half white
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = images.load_image(str(tmp_path / "wide.png"), resize=64, crop=32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    # 600x300 -> 128x64, center crop columns 48..80: left half black, right half white
    assert image[:, :14].max() < 10 and image[:, 18:].min() > 245


def test_missing_files_and_empty_folders(tmp_path, photos, capsys):
    assert cli.main(["classify", str(tmp_path)]) == 2
    assert "no images in" in capsys.readouterr().err
    image = str(photos / "astronaut.png")
    missing = str(tmp_path / "typo.png")
    # A missing image is named before any model is loaded (no weights download).
    assert cli.main(["classify", image, missing]) == 2
    assert capsys.readouterr().err.startswith(
        f"keras-densenet classify: error: image {missing!r}: no such file or folder.")
    assert cli.main(["classify", image, "--weights", str(tmp_path / "none.h5")]) == 2
    assert "existing weights file" in capsys.readouterr().err


def test_classify_on_onnx_and_openvino_prints_what_keras_prints(tmp_path, photos, capsys):
    pytest.importorskip("openvino")
    model_path = str(tmp_path / "m.keras")
    DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5, classes=1000,
             input_shape=(32, 32, 3)).save(model_path)
    common = ["classify", str(photos / "astronaut.png"), "--model", model_path]
    outputs = {}
    for runtime in ("keras", "onnx", "openvino"):
        assert cli.main(common + ["--runtime", runtime]) == 0
        outputs[runtime] = capsys.readouterr().out
    assert outputs["onnx"] == outputs["keras"] == outputs["openvino"]
    assert outputs["keras"].count("  5. ") == 1
    for extra, message in [(["--precision", "int8"], "--precision int8 needs --runtime openvino"),
                           (["--runtime", "openvino", "--precision", "int8"],
                            "--precision int8 needs --model an int8 .xml")]:
        assert cli.main(common + extra) == 2
        assert message in capsys.readouterr().err


def test_cam_writes_each_image_with_its_heatmap(imagenet_like_model, photos, tmp_path, capsys):
    import keras

    from keras_densenet.explain import grad_cam, overlay

    out = tmp_path / "heatmaps"  # created
    argv = ["classify", str(photos), "--model", imagenet_like_model, "--crop", "32",
            "--cam", str(out)]
    assert cli.main(argv) == 0
    assert "astronaut.png" in capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir()) == ["astronaut.png", "camera.png"]
    model = keras.models.load_model(imagenet_like_model)
    settings = classify.serving_settings(model, crop=32)
    image = images.load_image(str(photos / "camera.png"), settings["resize"], 32,
                                settings["interpolation"])
    heatmap = grad_cam(model, classify.model_input([image], settings))[0]
    written = np.asarray(Image.open(out / "camera.png"))
    np.testing.assert_array_equal(written, overlay(image, heatmap))
    assert written.shape == (32, 32, 3) and np.ptp(heatmap) == 1.0

    before = (out / "camera.png").stat().st_mtime_ns
    assert cli.main(argv) == 2  # nothing is overwritten without being asked
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"keras-densenet classify: error: --cam '{out / 'astronaut.png'}' "
                           "already exists; pass --overwrite")
    assert (out / "camera.png").stat().st_mtime_ns == before
    assert cli.main(argv + ["--overwrite"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["astronaut.png", "camera.png"]


@pytest.mark.parametrize("extra, message", [
    (["--runtime", "onnx"], "--cam needs a Keras model run by Keras (--runtime keras"),
    (["--cam", "{photos}"], "--cam '{photos}/astronaut.png' is one of the images; choose "
                            "another folder."),
    (["--cam", "{photos}/astronaut.png"], "--cam '{photos}/astronaut.png' is a file; name a "
                                          "folder."),
])
def test_cam_errors_come_before_any_work(photos, tmp_path, extra, message, capsys):
    argv = ["classify", str(photos), "--model", str(tmp_path / "never_loaded.keras"),
            "--cam", str(tmp_path / "out"), *[arg.format(photos=photos) for arg in extra]]
    assert cli.main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert message.format(photos=photos) in line


def test_cam_refuses_two_images_of_one_name(photos, tmp_path):
    Image.fromarray(skimage_data.astronaut()).save(photos / "astronaut.jpg")
    paths = classify.image_paths([str(photos)])
    with pytest.raises(ValueError, match="would both be written to .*astronaut.png'; rename "
                                         "one of them"):
        classify.heatmap_paths(paths, str(tmp_path))
    assert classify.heatmap_paths(paths[1:], str(tmp_path)) == {
        str(photos / "astronaut.png"): str(tmp_path / "astronaut.png"),
        str(photos / "camera.png"): str(tmp_path / "camera.png")}


def test_the_parser_imports_no_framework():
    import subprocess
    import sys

    script = ("import sys\nfrom keras_densenet.apps import classify\nclassify.build_parser()"
              "\nprint(sorted({'keras', 'tensorflow', 'jax', 'torch'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.fixture
def multi_label_model(tmp_path, photos):
    """A 3-label sigmoid model whose config records thresholds just below, above and at its
    scores for astronaut.png: labels "cat" and "car" are given, "dog" is not."""
    model = DenseNet(depth=7, growth_rate=4, classes=3, activation="sigmoid",
                     input_shape=(32, 32, 3))
    settings = classify.serving_settings(model)
    image = images.load_image(str(photos / "astronaut.png"), settings["resize"], 32,
                                settings["interpolation"])
    scores = model.predict(classify.model_input([image], settings), verbose=0)[0]
    thresholds = [float(scores[0]) - 0.01, float(scores[1]) + 0.01, float(scores[2])]
    model.update_config(class_names=["cat", "dog", "car"], multi_label=True,
                        thresholds=thresholds)
    path = str(tmp_path / "multi_label.keras")
    model.save(path)
    return path, scores, thresholds


def test_a_multi_label_model_gives_every_label_and_those_above_threshold(
        multi_label_model, photos, capsys):
    path, scores, thresholds = multi_label_model
    argv = ["classify", str(photos / "astronaut.png"), "--model", path]
    assert cli.main(argv + ["--json"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["labels"] == ["cat", "car"]
    assert [(entry["label"], entry["index"]) for entry in record["scores"]] == [
        ("cat", 0), ("dog", 1), ("car", 2)]
    np.testing.assert_allclose([entry["score"] for entry in record["scores"]], scores,
                               rtol=1e-5, atol=1e-6)
    assert [entry["threshold"] for entry in record["scores"]] == thresholds
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[-1] == "  labels: cat, car"
    assert lines[1].startswith("  cat ")
    assert lines[1].endswith(f"(threshold {thresholds[0]:.4f})  +")
    assert lines[2].endswith(f"(threshold {thresholds[1]:.4f})")


@pytest.mark.parametrize("facts, message", [
    (dict(multi_label=True, thresholds=[0.5, 0.5]), "the model records thresholds [0.5, 0.5]; "
                                                    "a multi-label model needs one number in "
                                                    "[0, 1] for each of its 3 outputs."),
    (dict(multi_label=True, thresholds=[0.5, 2.0, 0.5]), "needs one number in [0, 1]"),
    (dict(multi_label="yes"), "the model records multi_label='yes'; it must be true or false."),
])
def test_a_multi_label_config_that_does_not_fit_is_refused(facts, message):
    model = DenseNet(depth=7, growth_rate=4, classes=3, activation="sigmoid",
                     input_shape=(32, 32, 3))
    model.update_config(**facts)
    with pytest.raises(ValueError, match=re.escape(message)):
        classify.serving_settings(model)


def test_multi_label_without_thresholds_takes_one_half():
    model = DenseNet(depth=7, growth_rate=4, classes=3, activation="sigmoid",
                     input_shape=(32, 32, 3))
    assert classify.serving_settings(model)["thresholds"] is None
    model.update_config(multi_label=True)
    assert classify.serving_settings(model)["thresholds"] == [0.5, 0.5, 0.5]
