"""keras-densenet benchmark: timing, the table and CSV, the reference ratio, skipped runtimes."""

import csv
import importlib.util
import os
import subprocess
import sys
import time

import pytest

from keras_densenet import DenseNet, runtime
from keras_densenet.apps import benchmark, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--iterations", "3", "--warmup", "1", "--seconds", "1"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 32 px DenseNet with 5 classes, saved as .keras."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    DenseNet(depth=10, growth_rate=4, input_shape=(32, 32, 3), classes=5).save(path)
    return str(path)


def read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_help_imports_no_framework_and_is_quick():
    script = ("import sys, time\nstart = time.perf_counter()\n"
              "from keras_densenet.apps import cli\n"
              "for command in ('benchmark', 'validate'):\n"
              "    try:\n        cli.main([command, '--help'])\n"
              "    except SystemExit as exit:\n        assert exit.code == 0\n"
              "print(time.perf_counter() - start)\n"
              "for name in ('keras', 'tensorflow', 'jax', 'torch', 'openvino', 'onnxruntime'):\n"
              "    assert name not in sys.modules, name\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--batch-sizes" in result.stdout and "--runtimes" in result.stdout
    assert float(result.stdout.split()[-1]) < 1.5


def test_measure_interleaves_runs_leaves_out_the_warmup_and_stops_in_time():
    calls = []

    def run(name, seconds):
        def predict(images):  # the first call is slow, as a compilation is
            calls.append(name)
            time.sleep(0.3 if calls.count(name) == 1 else seconds)
        return predict

    runs = {"fast": (run("fast", 0.001), [0] * 4), "slow": (run("slow", 0.004), [0] * 2)}
    measured = benchmark.measure(runs, warmup=2, seconds=10, iterations=5)
    assert calls == ["fast"] * 2 + ["slow"] * 2 + ["fast", "slow"] * 5
    for name, batch in (("fast", 4), ("slow", 2)):
        timing = measured[name]
        assert timing["iterations"] == 5
        assert timing["p99_ms"] < 100  # the slow warm-up call is not timed
        assert timing["p50_ms"] <= timing["p90_ms"] <= timing["p99_ms"]
        assert timing["images_per_s"] == pytest.approx(batch / (timing["p50_ms"] / 1000), rel=0.5)
    assert measured["fast"]["images_per_s"] > measured["slow"]["images_per_s"]
    measured = benchmark.measure({"sleep": (lambda images: time.sleep(0.05), [0])}, warmup=1,
                                 seconds=0.12, iterations=100)
    assert 2 <= measured["sleep"]["iterations"] <= 4  # stopped by --seconds


@pytest.mark.slow  # keras.applications.DenseNet121 built and traced at two batch sizes
def test_table_and_csv_with_the_ratio_against_keras_applications(tiny_model, tmp_path, capsys):
    output = tmp_path / "speed.csv"
    code = cli.main(["benchmark", tiny_model, "--runtimes", "keras", "--batch-sizes", "1", "2",
                     "--reference", "densenet121", "--csv", str(output), *SHORT])
    table = capsys.readouterr().out
    assert code == 0
    columns, rows = read_csv(output)
    assert tuple(columns) == benchmark.COLUMNS
    ways = [f"keras.applications.DenseNet121 {how}"
            for how in ("predict", "predict_on_batch", "tf.function")]
    assert [(row["runtime"], row["batch_size"]) for row in rows] == [
        *((way, "1") for way in ways), ("keras", "1"), *((way, "2") for way in ways),
        ("keras", "2")]
    for batch in (rows[:4], rows[4:]):
        fastest = max(float(row["images_per_s"]) for row in batch[:3])
        for row in batch:
            assert float(row["ratio"]) == pytest.approx(float(row["images_per_s"]) / fastest,
                                                        rel=1e-3, abs=1e-4)
        assert max(float(row["ratio"]) for row in batch[:3]) == 1.0
    for row in rows:
        assert row["status"] == "ok" and row["iterations"] == "3" and row["image_size"] == "32"
        assert row["mode"] == "call" and row["of_largest_batch"] == ""  # keras has no stream
        assert float(row["p50_ms"]) <= float(row["p90_ms"]) <= float(row["p99_ms"])
        assert float(row["load_before"]) >= 0 and float(row["load_after"]) >= 0
        assert row["backend"] and row["cpu"] and int(row["cores"]) >= 1
    assert "images/s" in table and "p99 ms" in table and "1.00x" in table
    assert f"wrote {output}" in table


def test_a_stream_times_each_image_from_being_taken_to_its_scores():
    def predict_stream(images):  # two images in flight: each output comes one image late
        pending = []
        for image in images:
            time.sleep(0.01)
            pending.append(image)
            if len(pending) == 2:
                yield pending.pop(0)
        yield from pending

    stream = benchmark.Stream(predict_stream)
    latencies = stream(list(range(5)))
    assert len(latencies) == 5
    assert all(0.01 <= latency < 0.2 for latency in latencies[:4])
    measured = benchmark.measure({"stream": (stream, list(range(5)))}, warmup=0, seconds=10,
                                 iterations=2)["stream"]
    assert measured["iterations"] == 2  # streams, each of 5 images
    assert measured["images_per_s"] == pytest.approx(100, rel=0.5)  # an image every 10 ms
    assert 10 <= measured["p50_ms"] <= measured["p99_ms"] < 200  # one image's, not a stream's


def test_streams_run_at_batch_size_1_and_compare_with_the_largest_batch(tiny_model, tmp_path,
                                                                         capsys):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    output = tmp_path / "speed.csv"
    assert benchmark.main([tiny_model, "--runtimes", "keras", "onnx", "openvino-f32",
                           "--batch-sizes", "1", "4", "--stream", "6", "--csv", str(output),
                           *SHORT]) == 0
    table = capsys.readouterr().out
    _, rows = read_csv(output)
    ok = [(row["runtime"], row["mode"], row["batch_size"]) for row in rows
          if row["status"] == "ok"]
    assert ok == [(name, "call", size) for size in ("1", "4")
                  for name in ("keras", "onnx", "openvino-f32")] + [
        ("onnx", "stream", "1"), ("openvino-f32", "stream", "1")]  # keras has no stream
    batch = {row["runtime"]: float(row["images_per_s"]) for row in rows
             if row["batch_size"] == "4"}
    for row in rows[-2:]:
        assert float(row["of_largest_batch"]) == pytest.approx(
            float(row["images_per_s"]) / batch[row["runtime"]], rel=1e-3)
        assert float(row["p50_ms"]) <= float(row["p90_ms"]) <= float(row["p99_ms"])
        assert row["iterations"] == "3"
    assert "openvino-f32 stream" in table and "of the largest batch's images/s" in table
    assert benchmark.main([tiny_model, "--runtimes", "onnx", "--batch-sizes", "4",
                           *SHORT]) == 0  # no batch size 1: no stream
    assert " stream " not in capsys.readouterr().out


def test_runtimes_not_installed_or_not_supported_are_skipped_with_the_reason(
        tiny_model, tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (
        None if name == "onnxruntime" else find_spec(name, *args)))
    monkeypatch.setattr(runtime, "supports_bf16", lambda *args, **kwargs: False)  # a CPU without
    output = tmp_path / "speed.csv"
    code = benchmark.main([tiny_model, "--runtimes", "keras", "onnx", "openvino-f32",
                           "openvino-bf16", "--batch-sizes", "2", "--csv", str(output), *SHORT])
    table = capsys.readouterr().out
    assert code == 0
    _, rows = read_csv(output)
    status = {row["runtime"]: (row["status"], row["precision"], row["reason"]) for row in rows}
    assert status["onnx"] == ("skipped", "f32", "onnxruntime not installed")
    assert status["openvino-bf16"][:2] == ("skipped", "bf16")
    assert "bfloat16" in status["openvino-bf16"][2]
    assert status["keras.applications"][0] == "skipped"  # the tiny net is no published one
    for name in ("keras", "openvino-f32"):
        assert status[name][0] == "ok", status[name]
        assert status[name][1] == benchmark.runtime_precision(name)
    assert "onnx" in table and "skipped: onnxruntime not installed" in table


def test_an_export_runs_under_its_own_runtime_only(tiny_model, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import keras

    from keras_densenet.export import export

    path = export(keras.models.load_model(tiny_model), str(tmp_path / "tiny.onnx"), "onnx")
    assert benchmark.main([path, "--batch-sizes", "1", *SHORT]) == 0
    lines = capsys.readouterr().out.splitlines()
    onnx = [line for line in lines if line.split()[1:2] == ["onnx"]]
    assert len(onnx) == 2 and "skipped" not in " ".join(onnx)  # a call and a stream
    assert "onnx stream" in onnx[1]
    assert any("keras " in line and "is an export" in line for line in lines)
    assert any("openvino-int8" in line and "runs under onnx only" in line for line in lines)


@pytest.mark.parametrize("arguments, message", [
    (["tiny.keras"], "model 'tiny.keras': no such file"),
    (["densenet999"], "model must be a .keras/.h5 file, an export (.onnx, .xml) or a preset"),
    (["densenet121", "--runtimes", "keras", "tensorrt"], "--runtimes must be one of"),
    (["densenet121", "--batch-sizes", "0"], "--batch-sizes must be a positive integer"),
    (["densenet121", "--seconds", "0"], "--seconds must be a finite number in (0, inf)"),
    (["densenet121", "--reference", "resnet50"], "--reference must be one of"),
    (["densenet121", "--stream", "-1"], "--stream must be a positive integer"),
    (["densenet121", "--csv", "{existing}"], "already exists; pass --overwrite"),
])
def test_bad_arguments_are_one_line_errors(arguments, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing.csv").write_text("kept\n")
    arguments = [argument.format(existing="existing.csv") for argument in arguments]
    monkeypatch.setattr(benchmark, "benchmark", lambda *args: pytest.fail("work started"))
    assert cli.main(["benchmark", *arguments]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert (tmp_path / "existing.csv").read_text() == "kept\n"


def test_an_image_size_a_fixed_model_cannot_take_is_refused(tiny_model, capsys):
    assert cli.main(["benchmark", tiny_model, "--image-size", "64", "--runtimes", "keras"]) == 2
    assert "--image-size 64: this model takes (32, 32, 3) images only" in capsys.readouterr().err


def test_the_machine_is_described_from_the_cpu_and_openvino():
    machine = benchmark.machine_description()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            flags = next(line for line in handle if line.startswith("flags")).split()
        assert machine["cpu_flags"].split() == [f for f in benchmark.CPU_FLAGS if f in flags]
    if importlib.util.find_spec("openvino"):
        assert machine["openvino_capabilities"].split() == runtime.capabilities()
    assert machine["cores"] == os.cpu_count()
