"""Inference speed of DenseNet121 (224px): ours, fused and exported, vs keras.applications.

    python benchmarks/inference.py              # batch 1 and 32
    python benchmarks/inference.py --quick      # batch 1 and 4, fewer repeats
    python benchmarks/inference.py --repeats 3  # fewer repeats on a busy machine

Every path runs the same weights (keras.applications' random init, copied
into ours by layer name) on the same images, in one process, one after the
other; images/s is the median over repeats after a warm-up. The reference is
keras.applications.DenseNet121 at its fastest of ``predict``,
``predict_on_batch`` and a compiled call (``tf.function``), the ways of
``keras_densenet.apps.benchmark.reference_calls`` (as ``keras-densenet
benchmark`` takes it). Each row reports
its largest logit difference from keras.applications, its speed ratio to the
reference and the load average when it ran. OpenVINO rows go through
``keras_densenet.runtime`` (f32, bf16 where the CPU has it, int8 from NNCF
with random calibration images: a speed check; accuracy is in accuracy.py),
with each hint (``auto``: latency for one image, throughput otherwise;
``throughput``: asynchronous requests; ``latency``), each batch shape compiled
once as a static shape (the warm-up compiles it), and at batch 1 as a stream
(``Predictor.predict_stream``) of as many single images as the largest batch
holds; the tuning rows show what BN folding and NNCF's preset change.
Writes benchmarks/results/inference.csv (``--output`` names another file).
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from common import write_csv  # noqa: E402

from keras_densenet import DenseNetImageNet121, runtime  # noqa: E402
from keras_densenet.apps.benchmark import reference_calls  # noqa: E402
from keras_densenet.export import export, serving_model  # noqa: E402
from keras_densenet.weights.legacy_h5 import keras_applications_name  # noqa: E402
from keras_densenet.weights import assign  # noqa: E402



def timed(predict, images, repeats):
    predict(images)  # warm-up (tracing, compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = predict(images)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times), np.asarray(output)


def onnx_predictor(model, folder):
    path = export(model, os.path.join(folder, "densenet121.onnx"), "onnx", fuse=True)
    return runtime.load(path).predict


def openvino_predictor(model, folder, precision="f32", hint="throughput", fuse=True,
                       preset="performance", calibration=None):
    """A ``runtime`` predictor of an OpenVINO export; int8 when ``calibration`` images are
    given."""
    name = f"densenet121_{precision}_{fuse}_{preset}.xml"
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        export(model, path, "openvino", fuse=fuse, quantize=calibration,
               quantization_preset=preset, min_agreement=0)  # speed only: random calibration
    return runtime.load(path, precision=precision, hint=hint)


def streamed(predictor):
    """``images -> outputs`` through ``predictor.predict_stream``, one image at a time."""
    return lambda images: np.stack(list(predictor.predict_stream(images)))


def tflite_predictor(model, folder):
    from ai_edge_litert.interpreter import Interpreter

    path = export(model, os.path.join(folder, "densenet121.tflite"), "tflite", fuse=True)
    interpreter = Interpreter(path)
    (detail,) = interpreter.get_input_details()
    output_index = interpreter.get_output_details()[0]["index"]

    allocated = {"shape": None}

    def predict(x):
        if allocated["shape"] != x.shape:
            interpreter.resize_tensor_input(detail["index"], x.shape)
            interpreter.allocate_tensors()
            allocated["shape"] = x.shape
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return predict


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, help="timed runs per path (default 5, quick 3)")
    parser.add_argument("--calibration-size", type=int, default=128,
                        help="random calibration images for the int8 rows (default 128)")
    parser.add_argument("--output", default="inference.csv",
                        help="CSV name in benchmarks/results (default inference.csv; name the "
                             "CPU for another machine's, e.g. inference_xeon_amx.csv)")
    args = parser.parse_args()
    batches, repeats = ((1, 4), 3) if args.quick else ((1, 32), 5)
    repeats = args.repeats or repeats

    reference = keras.applications.DenseNet121(weights=None, input_shape=(224, 224, 3),
                                               classifier_activation=None)
    ours = DenseNetImageNet121(input_shape=(224, 224, 3), activation=None)  # logits
    assign(ours, {keras_applications_name(layer.name): layer.get_weights()
                  for layer in reference.layers if layer.weights})
    fused = serving_model(ours, fuse=True)
    xla = keras.models.clone_model(fused)
    xla.set_weights(fused.get_weights())
    xla.compile(jit_compile=True)
    calibration = np.random.default_rng(1).normal(
        size=(args.calibration_size, 224, 224, 3)).astype("float32")
    int8 = dict(precision="int8", calibration=calibration)
    bf16 = runtime.supports_bf16()
    if not bf16:
        print(f"no bf16 rows: OpenVINO reports {runtime.capabilities()} for this CPU", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        references = {f"keras.applications, {how}": call
                      for how, call in reference_calls(reference).items()}
        paths = {
            "ours (TF predict)": lambda x: ours.predict_on_batch(x),
            "ours, BN folded (TF predict)": lambda x: fused.predict_on_batch(x),
            "ours, BN folded, XLA": lambda x: xla.predict_on_batch(x),
            "ours, BN folded, ONNX (onnxruntime)": onnx_predictor(ours, folder),
            "ours, BN folded, TFLite (LiteRT)": tflite_predictor(ours, folder),
        }
        streams = {}  # batch-1 rows: a stream of single images, as many as the largest batch
        for hint in runtime.HINTS:
            for precision, label, kwargs in [("f32", "f32", {}), ("bf16", "bf16", {}),
                                             ("int8", "int8 (NNCF performance)", int8)]:
                if precision == "bf16" and not bf16:
                    continue
                predictor = openvino_predictor(ours, folder, hint=hint,
                                               **{**kwargs, "precision": precision})
                paths[f"OpenVINO {label}, BN folded, {hint}"] = predictor.predict
                if hint != "auto":  # a stream's auto is throughput
                    streams[f"OpenVINO {label}, BN folded, {hint}, stream"] = streamed(predictor)
        # tuning: what BN folding and the NNCF preset change (throughput hint)
        paths["OpenVINO f32, not folded, throughput"] = openvino_predictor(
            ours, folder, fuse=False).predict
        paths["OpenVINO int8 (NNCF performance), not folded, throughput"] = openvino_predictor(
            ours, folder, fuse=False, **int8).predict
        paths["OpenVINO int8 (NNCF mixed), BN folded, throughput"] = openvino_predictor(
            ours, folder, preset="mixed", **int8).predict
        for batch in batches:
            images = np.random.default_rng(0).normal(size=(batch, 224, 224, 3)).astype("float32")
            measured = {name: timed(predict, images, repeats)
                        for name, predict in references.items()}
            baseline = max(speed for speed, _ in measured.values())
            expected = measured["keras.applications, predict_on_batch"][1]
            runs = [(name, predict, images) for name, predict in {**references, **paths}.items()]
            if batch == 1:  # the one image, streamed as many times as the largest batch holds
                runs += [(name, stream, np.repeat(images, max(batches), axis=0))
                         for name, stream in streams.items()]
            for name, predict, inputs in runs:
                speed, output = measured.get(name) or timed(predict, inputs, repeats)
                rows.append(dict(batch=batch, path=name, images_per_s=round(speed, 2),
                                 ratio=round(speed / baseline, 2),
                                 max_abs_diff=float(np.max(np.abs(output - expected))),
                                 load_average=round(os.getloadavg()[0], 1)))
                print(f"batch {batch:>3}  {name:<66} {speed:8.2f} img/s  "
                      f"{speed / baseline:5.2f}x  max|diff| {rows[-1]['max_abs_diff']:.1e}  "
                      f"load {rows[-1]['load_average']}", flush=True)
                write_csv(args.output, rows)  # after every row: a long run keeps its rows
        largest = {row["path"]: row["images_per_s"] for row in rows if row["batch"] == max(batches)}
        for row in rows:  # a stream's rate against its path's at the largest batch
            if row["path"] in streams:
                row["stream_of_largest_batch"] = round(
                    row["images_per_s"] / largest[row["path"].removesuffix(", stream")], 2)
                print(f"{row['path']}: {row['stream_of_largest_batch']:.2f} of its batch "
                      f"{max(batches)} images/s", flush=True)
        write_csv(args.output, rows)


if __name__ == "__main__":
    main()
