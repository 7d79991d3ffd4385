"""``keras-densenet export``: a ``.keras`` model to SavedModel, ONNX or TFLite for serving.

    keras-densenet export runs/digits/model.keras exported/digits.onnx --format onnx --fuse

The library function behind it is ``keras_densenet.export.export``.
"""

import argparse
import os

import keras

from keras_densenet.export import FORMATS, INPUT_NAME, __doc__ as EXPORT_DOC, export
from keras_densenet.preprocessing import MODES
from keras_densenet.utils import check_output_path


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet export", description=__doc__ + EXPORT_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("output", help="SavedModel folder, .onnx or .tflite file")
    parser.add_argument("--format", choices=tuple(FORMATS), default="saved_model")
    parser.add_argument("--preprocessing", choices=MODES,
                        help="bake preprocess_input into the graph: the export takes uint8 images")
    parser.add_argument("--fuse", action="store_true", help="fold BN layers into convs")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (never the input model)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not os.path.exists(args.model):
        print(f"keras-densenet export: error: no such model file {args.model!r}")
        return 2
    try:
        check_output_path(args.output, args.overwrite, inputs=[args.model])
        model = keras.models.load_model(args.model)
        export(model, args.output, args.format, args.preprocessing, args.fuse,
               overwrite=args.overwrite)
    except (ValueError, OSError, ImportError) as error:
        print(f"keras-densenet export: error: {error}")
        return 2
    print(f"wrote {args.output} ({args.format}, input {INPUT_NAME!r}"
          f"{', uint8 with ' + args.preprocessing + ' preprocessing' if args.preprocessing else ''}"
          f"{', BN folded' if args.fuse else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
