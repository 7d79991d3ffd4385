"""keras-densenet classify: resize-then-crop, per-file errors, folders."""

import numpy as np
import pytest
from PIL import Image

from keras_densenet import DenseNet
from keras_densenet.apps import classify

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(skimage_data.coffee()).save(folder / "coffee.jpg")
    Image.fromarray(skimage_data.camera()).save(folder / "camera.png")  # grayscale
    (folder / "notes.jpg").write_text("not an image")
    return folder


def test_load_image_resizes_the_shorter_side_then_center_crops(tmp_path):
    pixels = np.zeros((300, 600, 3), dtype="uint8")
    pixels[:, 300:] = 255  # right half white
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = classify.load_image(str(tmp_path / "wide.png"), resize=64, crop=32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    # 600x300 -> 128x64, center crop columns 48..80: left half black, right half white
    assert image[:, :14].max() < 10 and image[:, 18:].min() > 245


def test_classify_prints_top5_and_reports_bad_files(tmp_path, image_folder, capsys):
    model_path = str(tmp_path / "m.keras")
    DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5, classes=1000,
             input_shape=(32, 32, 3)).save(model_path)
    code = classify.main([str(image_folder), "--model", model_path, "--resize", "40",
                          "--crop", "32"])
    captured = capsys.readouterr()
    assert code == 1  # one file failed
    assert "notes.jpg: not a readable image" in captured.err
    for name in ("astronaut.png", "coffee.jpg", "camera.png"):
        assert name in captured.out
    assert captured.out.count("  5. ") == 3


def test_classify_argument_errors(tmp_path, capsys):
    assert classify.main(["x.png", "--resize", "200", "--crop", "224"]) == 2
    assert "exceeds --resize" in capsys.readouterr().out
    assert classify.main(["x.png", "--weights", str(tmp_path / "none.h5")]) == 2
    assert "existing weights file" in capsys.readouterr().out


def test_classify_on_onnx_and_openvino_prints_what_keras_prints(tmp_path, image_folder, capsys):
    pytest.importorskip("openvino")
    model_path = str(tmp_path / "m.keras")
    DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5, classes=1000,
             input_shape=(32, 32, 3)).save(model_path)
    common = [str(image_folder / "coffee.jpg"), "--model", model_path, "--resize", "40",
              "--crop", "32"]
    outputs = {}
    for runtime in ("keras", "onnx", "openvino"):
        assert classify.main(common + ["--runtime", runtime]) == 0
        outputs[runtime] = capsys.readouterr().out
    assert outputs["onnx"] == outputs["keras"] == outputs["openvino"]
    assert outputs["keras"].count("  5. ") == 1
    for extra, message in [(["--precision", "int8"], "--precision int8 needs --runtime openvino"),
                           (["--runtime", "openvino", "--precision", "int8"],
                            "--precision int8 needs --model an int8 .xml"),
                           (["--runtime", "openvino", "--precision", "fp8"], None)]:
        if message is None:
            with pytest.raises(SystemExit):  # argparse names the choices
                classify.main(common + extra)
            continue
        assert classify.main(common + extra) == 2
        assert message in capsys.readouterr().out
