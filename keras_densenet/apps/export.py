"""``keras-densenet export``: a ``.keras`` model to SavedModel, ONNX, TFLite or OpenVINO IR.

    keras-densenet export runs/digits/model.keras exported/digits.onnx --format onnx --fuse
    keras-densenet export model.keras m.xml --format openvino --preprocessing torch --calibration DIR

The library function behind it is ``keras_densenet.export.export``.
"""

import argparse
import os

from keras_densenet.checks import check_choice
from keras_densenet.export import (FORMATS, HOLDOUT_EVERY, INPUT_NAME, MIN_AGREEMENT,
                                   QUANTIZATION_PRESETS, check_min_agreement, export,
                                   quantization_check)
from keras_densenet.export import __doc__ as EXPORT_DOC
from keras_densenet.preprocessing import MODES
from keras_densenet.utils import check_input_path, check_output_path

MODEL_EXTENSIONS = (".keras", ".h5")
"""What ``keras.models.load_model`` reads (``.h5``: Keras 2's whole-model files)."""
CALIBRATION_SIZE = 400
"""The default most ``--calibration`` images used, held-out ones included."""


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet export", description=__doc__ + EXPORT_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("output", help="SavedModel folder, .onnx, .tflite or OpenVINO .xml file "
                                       "(missing parent folders are created)")
    parser.add_argument("--format", choices=tuple(FORMATS), default="saved_model")
    parser.add_argument("--preprocessing", metavar="MODE",
                        help=f"bake preprocess_input(mode=MODE) into the graph ({', '.join(MODES)}): "
                             "the export takes uint8 images")
    parser.add_argument("--fuse", action="store_true", help="fold BN layers into convs")
    parser.add_argument("--calibration", metavar="DIR",
                        help="openvino: quantize to int8 with these images (a few hundred; "
                             "needs --preprocessing)")
    parser.add_argument("--calibration-size", type=int, default=CALIBRATION_SIZE,
                        help=f"use at most this many images of --calibration (default "
                             f"{CALIBRATION_SIZE}); every {HOLDOUT_EVERY}th is held out to check "
                             "the int8 model")
    parser.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                        help="refuse an int8 model whose top-1 class agrees with float32's on "
                             f"fewer than this share of the held-out images (default "
                             f"{MIN_AGREEMENT})")
    parser.add_argument("--quantization-preset", choices=QUANTIZATION_PRESETS,
                        default="performance", help="NNCF preset (default performance)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (never the input model)")
    return parser


def calibration_images(folder, model, limit=CALIBRATION_SIZE):
    """Up to ``limit`` images of ``folder`` (sorted) as a uint8 array the size of ``model``'s input."""
    import numpy as np

    from keras_densenet.apps.images import image_paths, load_image
    from keras_densenet.config import model_config

    paths = image_paths([folder])[:limit]
    if not paths:
        raise ValueError(f"--calibration {folder!r} holds no images.")
    channels_first = model_config(model)["data_format"] == "channels_first"
    size = model.input.shape[2] if channels_first else model.input.shape[1]
    channels = model.input.shape[1] if channels_first else model.input.shape[-1]
    if size is None:
        raise ValueError("--calibration needs a model with a fixed input size.")
    images = np.stack([load_image(path, resize=size, crop=size, channels=channels)
                       for path in paths])
    return images.transpose(0, 3, 1, 2) if channels_first else images


def main(argv=None):
    return run(build_parser().parse_args(argv))


def run(args):
    if args.preprocessing is not None:
        check_choice("--preprocessing", args.preprocessing, MODES)
    check_input_path(args.model, "model")
    if not args.model.endswith(MODEL_EXTENSIONS):
        raise ValueError(f"model {args.model!r} is not a Keras model file "
                         f"({' or '.join(MODEL_EXTENSIONS)}).")
    if args.calibration and not (args.format == "openvino" and args.preprocessing):
        raise ValueError("--calibration needs --format openvino and --preprocessing "
                         "(calibration images are raw).")
    if args.calibration:
        check_input_path(args.calibration, "--calibration", "folder")
    check_min_agreement("--min-agreement", args.min_agreement)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    check_output_path(args.output, args.overwrite, inputs=[args.model])
    import keras

    model = keras.models.load_model(args.model)
    calibration = (calibration_images(args.calibration, model, args.calibration_size)
                   if args.calibration else None)
    export(model, args.output, args.format, args.preprocessing, args.fuse,
           quantize=calibration, quantization_preset=args.quantization_preset,
           min_agreement=args.min_agreement, overwrite=args.overwrite)
    check = quantization_check(args.output) if args.calibration else None
    print(f"wrote {args.output} ({args.format}, input {INPUT_NAME!r}"
          f"{', uint8 with ' + args.preprocessing + ' preprocessing' if args.preprocessing else ''}"
          f"{', BN folded' if args.fuse else ''}"
          + (f", int8 from {check['calibration_images']} calibration images: top-1 agreement "
             f"{check['top1_agreement']:.1%} on {check['held_out_images']} held out, max |output "
             f"diff| {check['max_abs_output_diff']:.3g}" if check else "") + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
