"""Export a trained model as a TensorFlow SavedModel that takes raw uint8 images.

    keras-densenet train                                   # writes runs/digits/model.keras
    python examples/export_savedmodel.py runs/digits/model.keras exported/digits/1

The export bakes ``preprocess_input(mode="torch")`` into the graph and folds
BatchNormalizations into convolutions, then reloads the SavedModel with
``tf.saved_model.load`` and checks it against the Keras model. The folder
``exported/digits/1`` is laid out for TensorFlow Serving (model name
``digits``, version 1); see the README for the REST request format.
"""

import argparse
import os

import keras
import numpy as np

from keras_densenet import preprocess_input
from keras_densenet.export import INPUT_NAME, export


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keep the docstring's layout and show every default."""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("model", nargs="?", default="runs/digits/model.keras",
                        help="a .keras model")
    parser.add_argument("output", nargs="?", default="exported/digits/1",
                        help="the SavedModel folder to write")
    args = parser.parse_args()
    if not os.path.isfile(args.model):
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
