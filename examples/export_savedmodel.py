"""Export a trained model as a TensorFlow SavedModel that takes raw uint8 images.

    keras-densenet train                                   # writes runs/digits/model.keras
    python examples/export_savedmodel.py runs/digits/model.keras exported/digits/1
    python examples/export_savedmodel.py --quick           # an untrained tiny net, seconds

The export bakes ``preprocess_input(mode="torch")`` into the graph and folds
BatchNormalizations into convolutions, then reloads the SavedModel with
``tf.saved_model.load`` and checks it against the Keras model. The folder
``exported/digits/1`` is laid out for TensorFlow Serving (model name
``digits``, version 1); see docs/serving.md for the REST request format.
``--quick`` exports an untrained DenseNet-BC (L=10, k=4, 32x32) made here,
into a new temporary folder.
"""

import argparse
import os
import tempfile

from keras_densenet.apps.cli import start_framework

keras = start_framework()  # before the other imports: TensorFlow's start-up log stays quiet

import numpy as np  # noqa: E402

from keras_densenet import DenseNet, preprocess_input  # noqa: E402
from keras_densenet.export import INPUT_NAME, export  # noqa: E402


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keep the docstring's layout and show every default."""


def quick_model(folder):
    """Save an untrained DenseNet-BC (L=10, k=4) for 32x32 images in ``folder``; returns its path."""
    path = os.path.join(folder, "model.keras")
    DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5,
             input_shape=(32, 32, 3), classes=10).save(path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("model", nargs="?", default="runs/digits/model.keras",
                        help="a .keras model")
    parser.add_argument("output", nargs="?", default="exported/digits/1",
                        help="the SavedModel folder to write")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: export an untrained tiny DenseNet into a new "
                             "temporary folder (MODEL and OUTPUT are not used)")
    args = parser.parse_args()
    if args.quick:
        folder = tempfile.mkdtemp(prefix="export_savedmodel_quick_")
        args.model, args.output = quick_model(folder), os.path.join(folder, "exported", "1")
    elif not os.path.isfile(args.model):
        parser.error(f"no model file {args.model!r}: run `keras-densenet train` first, "
                     "or name a .keras file")

    import tensorflow as tf

    model = keras.models.load_model(args.model)
    export(model, args.output, "saved_model", preprocessing="torch", fuse=True)
    serving = tf.saved_model.load(args.output).signatures["serving_default"]
    images = np.random.default_rng(0).integers(
        0, 256, (4, *model.input.shape[1:]), dtype="uint8")
    (served,) = serving(**{INPUT_NAME: tf.constant(images)}).values()
    expected = model.predict(preprocess_input(images), verbose=0)
    difference = float(np.max(np.abs(served.numpy() - expected)))
    print(f"wrote {args.output}; serving input {INPUT_NAME!r} (uint8 "
          f"{tuple(model.input.shape[1:])}); max |SavedModel - Keras| = {difference:.2e}")
    if difference > 1e-4:
        raise SystemExit("the SavedModel does not reproduce the Keras model")


if __name__ == "__main__":
    main()
