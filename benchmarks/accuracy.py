"""Accuracy of a trained digits DenseNet in every serving precision, on its test split.

    python -m keras_densenet.apps.cli train --output runs/digits     # the model (a few minutes)
    python benchmarks/accuracy.py runs/digits/model.keras

The model's softmax is dropped (so logits are compared) and it is exported
with torch preprocessing baked in (uint8 input) and, unless said otherwise,
BN folding. Every path sees the same test images (keras_densenet.data.digits'
test split, rounded to uint8 as the exports take them). Rows: Keras f32 (the
reference), ONNX f32 under onnxruntime, OpenVINO f32, OpenVINO bf16 (where
the CPU supports it) and OpenVINO int8 from NNCF post-training quantization
with each preset, calibration size and with/without BN folding. Columns:
accuracy, its drop from Keras in points, top-1 agreement with Keras and the
largest |logit difference|. Writes benchmarks/results/accuracy.csv.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from common import write_csv  # noqa: E402
from keras_densenet import preprocess_input, runtime  # noqa: E402
from keras_densenet.apps.data import digits  # noqa: E402
from keras_densenet.export import export  # noqa: E402


def logits_model(model):
    """A copy of ``model`` whose last layer (the classifier) has no activation."""
    last = model.layers[-1].name

    def clone(layer):
        config = layer.get_config()
        if layer.name == last:
            config["activation"] = None
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .keras model trained on digits (keras-densenet train)")
    parser.add_argument("--calibration-sizes", type=int, nargs="+", default=[64, 300])
    args = parser.parse_args()

    model = logits_model(keras.models.load_model(args.model))
    (x_train, _), _, (x_test, y_test), _ = digits(image_size=model.input.shape[1])
    test = np.round(x_test).astype("uint8")
    calibration = np.round(x_train).astype("uint8")  # the train split, never the test split
    expected = model.predict(preprocess_input(test.astype("float32")), verbose=0)
    reference_accuracy = float(np.mean(expected.argmax(-1) == y_test))

    rows = []

    def report(path, precision, logits, note=""):
        accuracy = float(np.mean(logits.argmax(-1) == y_test))
        rows.append(dict(
            path=path, precision=precision, accuracy=round(accuracy, 4),
            drop_points=round(100 * (reference_accuracy - accuracy), 2),
            top1_agreement=round(float(np.mean(logits.argmax(-1) == expected.argmax(-1))), 4),
            max_abs_logit_diff=float(np.max(np.abs(logits - expected))), note=note,
            test_images=len(test), load_average=round(os.getloadavg()[0], 1)))
        print(rows[-1], flush=True)

    report("Keras (TF predict)", "f32", expected, "reference")
    with tempfile.TemporaryDirectory() as folder:
        def exported(name, **kwargs):
            return export(model, os.path.join(folder, name), preprocessing="torch", **kwargs)

        onnx = exported("m.onnx", format="onnx", fuse=True)
        report("ONNX, BN folded (onnxruntime)", "f32", runtime.load(onnx).predict(test))
        xml = exported("m.xml", format="openvino", fuse=True)
        report("OpenVINO, BN folded", "f32", runtime.load(xml).predict(test))
        if runtime.supports_bf16():
            report("OpenVINO, BN folded", "bf16",
                   runtime.load(xml, precision="bf16").predict(test))
        else:
            print(f"bf16: not supported here (OPTIMIZATION_CAPABILITIES "
                  f"{runtime.capabilities()}); no bf16 row")
        for size in args.calibration_sizes:
            for preset in ("performance", "mixed"):
                for fuse in (True, False):
                    name = f"int8_{size}_{preset}_{fuse}.xml"
                    path = exported(name, format="openvino", fuse=fuse,
                                    quantize=calibration[:size], quantization_preset=preset,
                                    min_agreement=0)  # the accuracy is what this measures
                    report(f"OpenVINO{', BN folded' if fuse else ''}, NNCF {preset}", "int8",
                           runtime.load(path).predict(test), f"{size} calibration images")
    write_csv("accuracy.csv", rows)


if __name__ == "__main__":
    main()
