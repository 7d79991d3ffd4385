"""Exports reloaded in their own runtimes, BN folding, and the export CLI."""

import fcntl
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_densenet import DenseNet, preprocess_input
from keras_densenet import export as export_lib
from keras_densenet.apps import cli
from keras_densenet.apps import export as export_command
from keras_densenet.fusion import fold_batch_norms, foldable_pairs

SMALL = dict(nb_dense_block=4, nb_layers_per_block=[1, 2, 1, 1], growth_rate=4, nb_filter=8,
             bottleneck=True, reduction=0.5, subsample_initial_block=True, classes=5)


def _model(data_format="channels_last"):
    shape = (64, 64, 3) if data_format == "channels_last" else (3, 64, 64)
    model = DenseNet(**SMALL, input_shape=shape, data_format=data_format)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape))
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    return model


def _raw_images(data_format="channels_last"):
    images = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype="uint8")
    return images if data_format == "channels_last" else images.transpose(0, 3, 1, 2)


def _expected(model, raw, data_format="channels_last", mode="torch"):
    return model.predict(preprocess_input(raw, mode=mode, data_format=data_format), verbose=0)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_folding_removes_the_bns_after_convs_and_keeps_outputs(data_format):
    model = _model(data_format)
    pairs = foldable_pairs(model)
    # the stem BN and the bn2 of each of the 5 dense layers
    assert pairs == {"stem_bn": "stem_conv", **{
        f"block{b}_layer{l}_bn2": f"block{b}_layer{l}_conv1"
        for b, n in enumerate(SMALL["nb_layers_per_block"], 1) for l in range(1, n + 1)}}
    fused = fold_batch_norms(model)
    names = {layer.name for layer in fused.layers}
    assert not names & set(pairs) and fused.get_layer("stem_conv").use_bias
    x = preprocess_input(_raw_images(data_format), data_format=data_format)
    np.testing.assert_allclose(fused.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


@pytest.mark.parametrize("memory_mode", [True, "full"])
def test_memory_efficient_models_are_served_in_the_plain_layout(memory_mode):
    """Recomputation only changes training: a model trained with it exports as the plain
    network (its BNs folded). OpenVINO ran DenseNet-121 exported from "full" in 1.28x the
    plain export's time (1422 ops against 560)."""
    plain = _model()
    model = DenseNet(**SMALL, input_shape=(64, 64, 3), memory_efficient=memory_mode)
    values = {weight.path: weight.numpy() for weight in plain.weights}
    for weight in model.weights:
        weight.assign(values[weight.path])
    model.update_config(class_names=list("abcde"))
    served = export_lib.serving_model(model, fuse=True)
    assert [type(layer).__name__ for layer in served.layers] == [
        type(layer).__name__ for layer in fold_batch_norms(plain).layers]
    assert not any(type(layer).__module__.endswith("memory_efficient") for layer in served.layers)
    assert served.densenet_config["class_names"] == list("abcde")
    assert served.densenet_config["architecture"]["memory_efficient"] is False
    x = preprocess_input(_raw_images())
    np.testing.assert_allclose(served.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    assert model.densenet_config["architecture"]["memory_efficient"] == memory_mode  # untouched


@pytest.mark.parametrize("mode", ["torch", "caffe_bgr"])
def test_saved_model_takes_raw_uint8_under_a_named_input(tmp_path, mode):
    import tensorflow as tf

    model = _model()
    path = export_lib.export(model, str(tmp_path / "sm"), "saved_model", preprocessing=mode,
                             fuse=True)
    serving = tf.saved_model.load(path).signatures["serving_default"]
    assert list(serving.structured_input_signature[1]) == ["images"]
    (output,) = serving(images=tf.constant(_raw_images())).values()
    assert np.max(np.abs(output.numpy() - _expected(model, _raw_images(), mode=mode))) <= 1e-4


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_onnx_export_matches_keras_in_onnxruntime(tmp_path, data_format):
    ort = pytest.importorskip("onnxruntime")
    model = _model(data_format)
    path = export_lib.export(model, str(tmp_path / "m.onnx"), "onnx", preprocessing="torch")
    session = ort.InferenceSession(path)
    assert [i.name for i in session.get_inputs()] == ["images"]
    (output,) = session.run(None, {"images": _raw_images(data_format)})
    expected = _expected(model, _raw_images(data_format), data_format)
    assert np.max(np.abs(output - expected)) <= 1e-4


def test_tflite_export_matches_keras_in_the_interpreter(tmp_path):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    model = _model()
    path = export_lib.export(model, str(tmp_path / "m.tflite"), "tflite", fuse=True)
    interpreter = litert.Interpreter(path)
    x = preprocess_input(_raw_images())
    (input_detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(input_detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], x)
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert np.max(np.abs(output - model.predict(x, verbose=0))) <= 1e-4


def test_export_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_lib.export(_model(), str(tmp_path / "x"), "coreml")
    with pytest.raises(ValueError, match="preprocessing must be None or one of"):
        export_lib.export(_model(), str(tmp_path / "x"), "onnx", preprocessing="tf")
    with pytest.raises(ValueError, match="must end with .xml"):
        export_lib.export(_model(), str(tmp_path / "x.onnx"), "openvino")
    with pytest.raises(ValueError, match="quantize= needs format='openvino'"):
        export_lib.export(_model(), str(tmp_path / "x.onnx"), "onnx", quantize=np.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match=r"must have shape \(n, 64, 64, 3\); got \(4, 32, 32, 3\)"):
        export_lib.export(_model(), str(tmp_path / "x.xml"), "openvino",
                          quantize=np.zeros((4, 32, 32, 3)))
    assert not list(tmp_path.iterdir())  # checked before any work


def test_export_cli(tmp_path, capsys):
    model_path = str(tmp_path / "m.keras")
    _model().save(model_path)
    out = str(tmp_path / "m.onnx")
    assert export_command.main([model_path, out, "--format", "onnx", "--fuse",
                            "--preprocessing", "torch"]) == 0
    assert "uint8 with torch preprocessing, BN folded" in capsys.readouterr().out
    # Errors are one line on stderr, before any work (through the keras-densenet command).
    (tmp_path / "notes.txt").write_text("not a model")
    for model, message in [(str(tmp_path / "none.keras"), "': no such file."),
                           (str(tmp_path / "notes.txt"), "is not a Keras model file "
                                                         "(.keras or .h5)")]:
        assert cli.main(["export", model, str(tmp_path / "x.onnx")]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("keras-densenet export: error: ") and message in captured.err
        assert captured.err.count("\n") == 1 and not captured.out
    assert cli.main(["export", model_path, str(tmp_path / "x.onnx"), "--preprocessing", "tf"]) == 2
    assert "--preprocessing must be one of ('torch', 'caffe_bgr'); got 'tf'" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_openvino_export_matches_keras_in_openvino(tmp_path, data_format="channels_last"):
    pytest.importorskip("openvino")
    from keras_densenet.runtime import load

    model = _model(data_format)
    path = export_lib.export(model, str(tmp_path / "m.xml"), "openvino", preprocessing="torch",
                             fuse=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]  # no temp left
    predictor = load(path, precision="f32")
    assert predictor.input_dtype == "uint8" and predictor.input_shape[0] is None
    output = predictor.predict(_raw_images(data_format))
    assert np.max(np.abs(output - _expected(model, _raw_images(data_format), data_format))) <= 1e-4


def test_openvino_int8_export_from_a_dataset(tmp_path):
    pytest.importorskip("nncf")
    import openvino
    import tensorflow as tf

    calibration = np.random.default_rng(2).integers(0, 256, (8, 64, 64, 3))
    dataset = tf.data.Dataset.from_tensor_slices((calibration, [0] * 8)).batch(3)
    batches = export_lib.calibration_batches(dataset, (None, 64, 64, 3), "uint8")
    np.testing.assert_array_equal(np.concatenate(batches), calibration)
    path = export_lib.export(_model(), str(tmp_path / "m.xml"), "openvino",
                             preprocessing="torch", quantize=dataset)
    ops = openvino.Core().read_model(path).get_ops()
    assert any(op.get_type_name() == "FakeQuantize" for op in ops)


def test_exports_refuse_to_overwrite_unless_asked(tmp_path):
    path = str(tmp_path / "m.onnx")
    export_lib.export(_model(), path, "onnx")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite"):
        export_lib.export(_model(), path, "onnx")
    before = open(path, "rb").read()
    export_lib.export(_model(data_format="channels_first"), path, "onnx", overwrite=True)
    assert open(path, "rb").read() != before and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_export_cli_quantizes_openvino_from_an_image_folder(tmp_path, capsys):
    pytest.importorskip("nncf")
    from PIL import Image

    model_path = str(tmp_path / "m.keras")
    _model().save(model_path)
    folder = tmp_path / "calibration"
    folder.mkdir()
    for index, image in enumerate(np.random.default_rng(3).integers(0, 256, (4, 80, 70, 3))):
        Image.fromarray(image.astype("uint8")).save(folder / f"{index}.png")
    out = str(tmp_path / "m.xml")
    args = [model_path, out, "--format", "openvino", "--calibration", str(folder)]
    assert cli.main(["export", *args]) == 2
    assert "--calibration needs --format openvino and --preprocessing" in capsys.readouterr().err
    assert export_command.main(args + ["--preprocessing", "torch", "--fuse"]) == 0
    assert ("BN folded, int8 from 3 calibration images: top-1 agreement 100.0% on 1 held out, "
            "max |output diff| ") in capsys.readouterr().out
    assert cli.main(["export", *args, "--preprocessing", "torch", "--overwrite",
                     "--min-agreement", "2"]) == 2
    assert "--min-agreement must be a finite number in [0, 1]; got 2.0" in capsys.readouterr().err


def test_exports_create_missing_parent_folders(tmp_path, capsys):
    """The README's ``export(model, "exported/densenet/1", "saved_model")``, library and CLI."""
    model = _model()
    path = str(tmp_path / "exported" / "densenet" / "1")
    assert export_lib.export(model, path, "saved_model") == path
    assert sorted(p.name for p in (tmp_path / "exported" / "densenet").iterdir()) == ["1"]
    with pytest.raises(FileExistsError, match="already exists; pass overwrite"):
        export_lib.export(model, path, "saved_model")
    model_path = str(tmp_path / "m.keras")
    model.save(model_path)
    assert cli.main(["export", model_path, str(tmp_path / "cli" / "densenet" / "1")]) == 0
    assert (tmp_path / "cli" / "densenet" / "1" / "saved_model.pb").exists()
    assert cli.main(["export", model_path, str(tmp_path / "cli" / "densenet" / "1")]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(tmp_path):
    path = tmp_path / "m.onnx"
    killed = subprocess.run(  # dies by SIGKILL inside the staging folder, as in a killed export
        [sys.executable, "-c", "import os, signal\n"
         "from keras_densenet.export import staging_folder\n"
         f"with staging_folder({str(path)!r}) as folder:\n"
         "    open(os.path.join(folder, 'm.onnx'), 'w').write('half')\n"
         "    os.kill(os.getpid(), signal.SIGKILL)\n"])
    assert killed.returncode == -signal.SIGKILL
    (left,) = [entry.name for entry in tmp_path.iterdir()]
    assert left.startswith(".m.onnx.") and len(left) == len(".m.onnx.") + 8
    others = [".m.onnx.short", ".m.onnx.abcd12345", ".n.onnx.abcd1234", "m.onnx.abcd1234"]
    for name in others:
        (tmp_path / name).mkdir()
    (tmp_path / ".m.onnx.file1234").write_text("a file, not a staging folder")
    running = tmp_path / ".m.onnx.running1"  # another export's, still running: locked
    running.mkdir()
    descriptor = os.open(running, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        export_lib.export(_model(), str(path), "onnx")
    finally:
        os.close(descriptor)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == sorted(
        [*others, ".m.onnx.file1234", ".m.onnx.running1", "m.onnx"])


def test_int8_export_records_its_check_on_held_out_images(tmp_path):
    pytest.importorskip("nncf")
    import openvino

    model = _model()
    images = np.random.default_rng(4).integers(0, 256, (16, 64, 64, 3))
    path = export_lib.export(model, str(tmp_path / "m.xml"), "openvino", preprocessing="torch",
                             quantize=images)
    check = export_lib.quantization_check(path)
    assert check["calibration_images"] == 12 and check["held_out_images"] == 4
    assert check["top1_agreement"] >= export_lib.MIN_AGREEMENT
    # measured again here: the held-out images are every 4th one
    float_path = export_lib.export(model, str(tmp_path / "f32.xml"), "openvino",
                                   preprocessing="torch")

    def held_out_outputs(file):  # image by image, in float32, as export measures them
        compiled = openvino.Core().compile_model(file, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.concatenate([compiled(image[None])[0] for image in images[3::4].astype("uint8")])

    difference = np.abs(held_out_outputs(float_path) - held_out_outputs(path)).max()
    assert check["max_abs_output_diff"] == pytest.approx(difference, rel=1e-5)
    assert export_lib.quantization_check(float_path) is None
    for kwargs, message in [(dict(quantize=images[:3]), "needs at least 4 calibration images"),
                            (dict(quantize=images, min_agreement=1.5),
                             r"min_agreement must be a finite number in \[0, 1\]")]:
        with pytest.raises(ValueError, match=message):
            export_lib.export(model, str(tmp_path / "x.xml"), "openvino", preprocessing="torch",
                              **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f32.bin", "f32.xml", "m.bin", "m.xml"]
