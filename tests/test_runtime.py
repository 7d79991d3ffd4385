"""keras_densenet.runtime: exported files served without Keras, in every precision."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_densenet import DenseNet, preprocess_input
from keras_densenet import runtime
from keras_densenet.apps.data import digits
from keras_densenet.export import export

pytest.importorskip("openvino")

SMALL = dict(nb_dense_block=3, nb_layers_per_block=[2, 2, 2], growth_rate=8, nb_filter=16,
             bottleneck=True, reduction=0.5, classes=10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(model, train images, test images, test labels, folder)``: a tiny DenseNet fitted to
    16px digits in seconds (about 95% test accuracy); images rounded to the uint8 exports take."""
    keras.utils.set_random_seed(0)
    (x_train, y_train), _, (x_test, y_test), _ = digits(image_size=16)
    model = DenseNet(**SMALL, input_shape=(16, 16, 3))
    for layer in model.layers:  # moving statistics that settle within a few dozen steps
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.8
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(preprocess_input(x_train.round()), y_train, epochs=6, batch_size=64, verbose=0)
    return (model, x_train.round().astype("uint8"), x_test.round().astype("uint8"), y_test,
            tmp_path_factory.mktemp("exports"))


def _keras_outputs(model, images):
    return model.predict(preprocess_input(images.astype("float32")), verbose=0)


@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
def test_f32_exports_match_keras(trained, suffix):
    model, _, images, _, folder = trained
    path = export(model, str(folder / f"f32{suffix}"), "onnx" if suffix == ".onnx" else "openvino",
                  preprocessing="torch", fuse=True)
    for hint in runtime.HINTS:
        predictor = runtime.load(path, hint=hint)
        assert predictor.precision == "f32" and predictor.input_shape == (None, 16, 16, 3)
        output = predictor.predict(images[:37])  # not a multiple of the request count
        assert np.max(np.abs(output - _keras_outputs(model, images[:37]))) <= 1e-4


@pytest.fixture(scope="module")
def int8_path(trained):
    """The trained model quantized; the held-out check at export (25 images) allows one miss,
    the test below asks for 95% agreement on the test split."""
    model, calibration, _, _, folder = trained
    return export(model, str(folder / "int8.xml"), "openvino", preprocessing="torch", fuse=True,
                  quantize=calibration[:100], min_agreement=0.95)


def test_int8_export_agrees_with_keras(trained, int8_path):
    model, _, images, labels, _ = trained
    path = int8_path
    predictor = runtime.load(path)
    assert predictor.precision == "int8"
    expected = _keras_outputs(model, images)
    predicted = predictor.predict(images)
    agreement = np.mean(predicted.argmax(-1) == expected.argmax(-1))
    accuracy = np.mean(expected.argmax(-1) == labels)
    assert accuracy > 0.9 and agreement >= 0.95, (accuracy, agreement)
    with pytest.raises(ValueError, match="is int8-quantized; use precision='int8'"):
        runtime.load(path, precision="f32")


def _stream_export(trained, suffix):
    model, _, _, _, folder = trained
    path = str(folder / f"stream{suffix}")
    if not os.path.exists(path):
        export(model, path, "onnx" if suffix == ".onnx" else "openvino", preprocessing="torch")
    return path


@pytest.mark.parametrize("suffix, hint", [(".onnx", "auto"), (".xml", "auto"),
                                          (".xml", "throughput"), (".xml", "latency")])
def test_a_stream_gives_predicts_outputs_in_order(trained, suffix, hint):
    images = trained[2][:9]
    predictor = runtime.load(_stream_export(trained, suffix), hint=hint)
    expected = predictor.predict(images)
    rows = list(predictor.predict_stream(image for image in images))  # a generator
    assert [row.shape for row in rows] == [(10,)] * 9
    np.testing.assert_allclose(np.stack(rows), expected, atol=1e-5)
    mixed = list(predictor.predict_stream([images[:4], images[4], images[5:]]))  # small batches
    assert [output.shape for output in mixed] == [(4, 10), (10,), (4, 10)]
    np.testing.assert_allclose(np.concatenate([mixed[0], mixed[1][None], mixed[2]]), expected,
                               atol=1e-5)
    assert list(predictor.predict_stream([])) == []


def test_an_int8_stream_gives_predicts_outputs(trained, int8_path):
    images = trained[2][:12]
    predictor = runtime.load(int8_path)
    np.testing.assert_allclose(np.stack(list(predictor.predict_stream(images))),
                               predictor.predict(images), atol=1e-4)


def test_a_stream_reads_its_images_as_it_goes(trained):
    """Pipelined, not collected first: the first output comes while most images are unread."""
    images, taken = trained[2][:40], []

    def read():
        for index, image in enumerate(images):
            taken.append(index)
            yield image

    predictor = runtime.load(_stream_export(trained, ".xml"))
    stream = predictor.predict_stream(read())
    next(stream)
    assert len(taken) < 20, len(taken)
    stream.close()  # stops early: the requests in flight are waited for, nothing left running
    assert len(list(predictor.predict_stream(images[:3]))) == 3


@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
def test_a_bad_stream_item_is_a_one_line_error_naming_it(trained, suffix):
    images = trained[2]
    wide = images[0].astype("int32")
    wide[0, 0, 0] = 256
    predictor = runtime.load(_stream_export(trained, suffix))
    for bad, message in [
            (images[0, :8], r"stream item 2 must be an image of shape \(16, 16, 3\) or a batch "
                            r"of them for .*; got \(8, 16, 3\)\.$"),
            (images[:1, None], r"stream item 2 must be an image .*; got \(1, 1, 16, 16, 3\)"),
            (images[0].astype("float32"), r"^stream item 2: .* takes uint8 images"),
            (wide, r"^stream item 2: .* values 0\.\.255 .* got int32 values 0\.\.256")]:
        stream = predictor.predict_stream([images[0], images[1], bad, images[3]])
        assert len([next(stream), next(stream)]) == 2  # the items before it
        with pytest.raises(ValueError, match=message):
            next(stream)


def test_int8_export_refuses_a_model_that_disagrees_on_held_out_images(trained):
    """Calibrated on flat grey images only, the int8 model saturates on the held-out digits."""
    model, calibration, _, _, folder = trained
    skewed = calibration[:100].copy()
    skewed[np.arange(100) % 4 != 3] = 128  # every 4th image is held out, the rest calibrate
    with pytest.raises(ValueError, match=r"^The int8 model agrees with float32 on the top-1 class "
                                         r"of \d+\.\d% of 25 held-out calibration images, below "
                                         r"min_agreement=0\.995; nothing written \(.*\)\.$"):
        export(model, str(folder / "poor.xml"), "openvino", preprocessing="torch", fuse=True,
               quantize=skewed)
    assert not list(folder.glob("poor*")) and not list(folder.glob(".poor*"))


@pytest.mark.skipif(not runtime.supports_bf16(), reason="this CPU has no bfloat16 in OpenVINO")
def test_bf16_agrees_with_keras(trained):
    model, _, images, _, folder = trained
    path = export(model, str(folder / "bf16.xml"), "openvino", preprocessing="torch", fuse=True)
    predicted = runtime.load(path, precision="bf16").predict(images)
    expected = _keras_outputs(model, images)
    assert np.mean(predicted.argmax(-1) == expected.argmax(-1)) >= 0.97


def test_openvino_compiles_each_batch_shape_once(trained, monkeypatch):
    """Static shapes: one compiled model per (hint, chunk shape), reused, at most MAX_COMPILED."""
    model, _, images, _, folder = trained
    path = export(model, str(folder / "shapes.xml"), "openvino", preprocessing="torch")
    monkeypatch.setattr(runtime.OpenVINOPredictor, "MAX_COMPILED", 3)
    predictor = runtime.load(path)  # hint "auto"
    single = predictor.predict(images[:1])
    assert list(predictor._compiled) == [("latency", (1, 16, 16, 3))]
    batch = predictor.predict(images[:6])
    queues = dict(predictor._compiled)
    assert all(shape[0] <= 6 and None not in shape for _, shape in queues)
    np.testing.assert_allclose(predictor.predict(images[:6]), batch, atol=1e-6)
    assert all(predictor._compiled[key] is queue for key, queue in queues.items())  # reused
    np.testing.assert_allclose(batch[:1], single, atol=1e-5)
    for size in (2, 3, 4, 5):
        predictor.predict(images[:size])
    assert len(predictor._compiled) <= 3


def test_cpu_pinning_is_openvinos_unless_asked(trained):
    import openvino
    import openvino.properties.hint as hints

    model, _, images, _, folder = trained
    path = export(model, str(folder / "pinning.xml"), "openvino", preprocessing="torch")
    chosen = openvino.Core().compile_model(path, "CPU", {"PERFORMANCE_HINT": "LATENCY"}).get_property(
        hints.enable_cpu_pinning)
    for kwargs, pinned in [({}, chosen), (dict(pinning=True), True), (dict(pinning=False), False)]:
        predictor = runtime.load(path, hint="latency", **kwargs)
        predictor.predict(images[:1])
        (pool,) = predictor._compiled.values()
        assert pool.compiled.get_property(hints.enable_cpu_pinning) is pinned
    with pytest.raises(ValueError, match="pinning must be True or False; got 'no'"):
        runtime.load(path, pinning="no")


def test_bad_requests_give_one_line_errors(trained, monkeypatch):
    model, _, images, _, folder = trained
    path = export(model, str(folder / "checks.xml"), "openvino", preprocessing="torch")
    for kwargs, message in [(dict(precision="fp16"), "precision must be None or one of"),
                            (dict(hint="fast"), "hint must be one of"),
                            (dict(precision="int8"), "is not quantized; export it with quantize=")]:
        with pytest.raises(ValueError, match=message):
            runtime.load(path, **kwargs)
    monkeypatch.setattr(runtime, "capabilities", lambda device="CPU", core=None: ["FP32", "INT8"])
    with pytest.raises(ValueError, match=r"'bf16' needs a CPU with bfloat16 support .*\['FP32', 'INT8'\]"):
        runtime.load(path, precision="bf16")
    with pytest.raises(ValueError, match="must be an exported .onnx or OpenVINO .xml"):
        runtime.load(str(folder / "model.keras"))
    with pytest.raises(ValueError, match="onnx runtime runs f32 only"):
        runtime.load(export(model, str(folder / "checks.onnx"), "onnx"), precision="int8")
    predictor = runtime.load(path)
    with pytest.raises(ValueError, match="takes uint8 images"):
        predictor.predict(images.astype("float32"))
    with pytest.raises(ValueError, match=r"must have shape \(batch, 16, 16, 3\)"):
        predictor.predict(images[:, :8])


def test_runtime_serves_without_importing_keras(trained):
    model, _, images, _, folder = trained
    path = export(model, str(folder / "service.xml"), "openvino", preprocessing="torch")
    np.save(folder / "images.npy", images[:4])
    script = (
        "import sys, numpy as np\n"
        "from keras_densenet import runtime\n"
        f"scores = runtime.load({path!r}).predict(np.load({str(folder / 'images.npy')!r}))\n"
        "assert scores.shape == (4, 10), scores.shape\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow', 'torch', 'jax'}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
def test_integer_images_outside_0_255_are_refused_not_wrapped(trained, suffix):
    model, _, images, _, folder = trained
    path = export(model, str(folder / f"range{suffix}"), "onnx" if suffix == ".onnx" else "openvino",
                  preprocessing="torch")
    predictor = runtime.load(path)
    np.testing.assert_array_equal(predictor.predict(images[:4].astype("int64")),
                                  predictor.predict(images[:4]))  # in range: any integer dtype
    for wide, shown in [(images[:4].astype("uint16") * 257, "uint16 values 0..65535"),
                        (images[:4].astype("int16") - 1, r"int16 values -1\.\.254"),
                        (images[:4].astype("int32") + 1, r"int32 values 1\.\.256")]:
        with pytest.raises(ValueError, match=rf"takes uint8 images, values 0\.\.255 .*got {shown}"):
            predictor.predict(wide)
