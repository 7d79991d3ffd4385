"""Inference speed of DenseNet121 (224px): ours, fused and exported, vs keras.applications.

    python benchmarks/inference.py            # batch 1 and 32
    python benchmarks/inference.py --quick    # batch 1 and 4, fewer repeats

Every path runs the same weights (keras.applications' random init, copied
into ours by layer name) on the same images, in one process, one after the
other; images/s is the median over repeats after a warm-up. Each row reports
its largest logit difference from keras.applications and its speed ratio.
Writes benchmarks/results/inference.csv.
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
from keras_densenet import DenseNetImageNet121  # noqa: E402
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
    import onnxruntime

    path = export(model, os.path.join(folder, "densenet121.onnx"), "onnx", fuse=True)
    session = onnxruntime.InferenceSession(path)
    return lambda x: session.run(None, {"images": x})[0]


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
    args = parser.parse_args()
    batches, repeats = ((1, 4), 3) if args.quick else ((1, 32), 5)

    reference = keras.applications.DenseNet121(weights=None, input_shape=(224, 224, 3),
                                               classifier_activation=None)
    ours = DenseNetImageNet121(input_shape=(224, 224, 3), activation=None)  # logits
    assign(ours, {keras_applications_name(layer.name): layer.get_weights()
                  for layer in reference.layers if layer.weights})
    fused = serving_model(ours, fuse=True)
    xla = keras.models.clone_model(fused)
    xla.set_weights(fused.get_weights())
    xla.compile(jit_compile=True)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = {
            "keras.applications (TF predict)": lambda x: reference.predict_on_batch(x),
            "ours (TF predict)": lambda x: ours.predict_on_batch(x),
            "ours, BN folded (TF predict)": lambda x: fused.predict_on_batch(x),
            "ours, BN folded, XLA": lambda x: xla.predict_on_batch(x),
            "ours, BN folded, ONNX (onnxruntime)": onnx_predictor(ours, folder),
            "ours, BN folded, TFLite (LiteRT)": tflite_predictor(ours, folder),
        }
        for batch in batches:
            images = np.random.default_rng(0).normal(size=(batch, 224, 224, 3)).astype("float32")
            baseline, expected = None, None
            for name, predict in paths.items():
                speed, output = timed(predict, images, repeats)
                if baseline is None:
                    baseline, expected = speed, output
                rows.append(dict(batch=batch, path=name, images_per_s=round(speed, 2),
                                 ratio=round(speed / baseline, 2),
                                 max_abs_diff=float(np.max(np.abs(output - expected)))))
                print(f"batch {batch:>3}  {name:<38} {speed:8.2f} img/s  "
                      f"{speed / baseline:5.2f}x  max|diff| {rows[-1]['max_abs_diff']:.1e}",
                      flush=True)
    write_csv("inference.csv", rows)


if __name__ == "__main__":
    main()
