"""``keras-densenet classify``: top-5 ImageNet classes of images, as published evaluations do.

    keras-densenet classify photo.jpg folder/ --arch densenet121 --weights imagenet
    keras-densenet classify photo.jpg --model my_model.keras --preprocessing torch
    keras-densenet classify photo.jpg --runtime openvino            # exported, BN folded
    keras-densenet classify photo.jpg --runtime openvino --precision int8 --model m_int8.xml

Each image is resized so that its shorter side is 256 pixels (bicubic), then
center-cropped to 224x224 (``--resize``/``--crop`` change this), and
preprocessed the way the weights expect (``torch`` or ``caffe_bgr``, from
the weights' source unless ``--preprocessing`` says otherwise). A file that is
not an image is reported and skipped; the exit code is 1 if any file failed.

``--runtime onnx|openvino`` runs the model through ``keras_densenet.runtime``:
an exported ``--model`` (``.onnx``/``.xml``) as it is, or the Keras model
exported first (BN folded, preprocessing baked in) to a temporary file.
``--precision bf16`` needs OpenVINO on a CPU with bfloat16; ``int8`` needs an
IR quantized by ``keras-densenet export --format openvino --calibration DIR``.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

from keras_densenet import runtime as runtime_lib
from keras_densenet import weights as weights_lib
from keras_densenet.model import model_config
from keras_densenet.apps.images import image_paths, load_image
from keras_densenet.architectures import IMAGENET_ARCHITECTURES
from keras_densenet.preprocessing import MODES, decode_predictions, preprocess_input

def load_model(model_path=None, architecture="densenet121", weights="imagenet",
               weights_source=None):
    """``(model, preprocessing mode or None)`` from a ``.keras`` file or a preset + weights."""
    import keras

    from keras_densenet.presets import DenseNetImageNet

    if model_path:
        model = keras.models.load_model(model_path)
    else:
        model = DenseNetImageNet(architecture, weights=weights, weights_source=weights_source)
    return model, model_config(model)["preprocessing"]


def runtime_model(model, runtime, precision, preprocessing, folder):
    """A ``runtime.Predictor`` for ``model`` (a Keras model, or the path of an export).

    A Keras model is exported first to ``folder`` (BN folded, ``preprocessing``
    baked in, so the predictor takes uint8 images).
    """
    from keras_densenet.export import export

    if isinstance(model, str):
        if runtime_lib.RUNTIMES.get(os.path.splitext(model)[1]) != runtime:
            raise ValueError(f"--runtime {runtime} needs a .keras model or its own export "
                             f"({'.onnx' if runtime == 'onnx' else '.xml'}); got {model!r}.")
        return runtime_lib.load(model, precision)
    if precision == "int8":
        raise ValueError("--precision int8 needs --model an int8 .xml (keras-densenet export "
                         "--format openvino --preprocessing MODE --calibration DIR).")
    path = os.path.join(folder, "model.onnx" if runtime == "onnx" else "model.xml")
    export(model, path, runtime, preprocessing=preprocessing, fuse=True)
    return runtime_lib.load(path, precision)


def classify(model, paths, preprocessing, top=5, resize=256, crop=224, batch_size=16):
    """Yield ``(path, predictions or None, error or None)`` per image, in order.

    ``model``: a Keras model or a ``runtime.Predictor`` (uint8 input: raw images).
    """
    on_runtime = isinstance(model, runtime_lib.Predictor)
    if on_runtime:  # an exported file records no data format: channels come first or last
        channels_first = model.input_shape[1] == 3 and model.input_shape[-1] != 3
    else:
        channels_first = model_config(model)["data_format"] == "channels_first"
    raw = on_runtime and model.input_dtype == "uint8"
    for start in range(0, len(paths), batch_size):
        batch_paths, images, errors = [], [], {}
        for path in paths[start:start + batch_size]:
            try:
                images.append(load_image(path, resize, crop))
                batch_paths.append(path)
            except (ValueError, FileNotFoundError) as error:
                errors[path] = str(error)
        decoded = {}
        if images:
            x = np.stack(images) if raw else preprocess_input(np.stack(images), mode=preprocessing)
            if channels_first:
                x = x.transpose(0, 3, 1, 2)
            scores = model.predict(x) if on_runtime else model.predict(x, verbose=0)
            decoded = dict(zip(batch_paths, decode_predictions(np.asarray(scores), top=top)))
        for path in paths[start:start + batch_size]:
            yield path, decoded.get(path), errors.get(path)


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--model", help="a .keras model (1000 ImageNet classes)")
    parser.add_argument("--arch", default="densenet121", choices=sorted(IMAGENET_ARCHITECTURES))
    parser.add_argument("--weights", default="imagenet", help="'imagenet' or a weights file")
    parser.add_argument("--weights-source", choices=weights_lib.SOURCES)
    parser.add_argument("--preprocessing", choices=MODES,
                        help="default: what the weights expect (torch for a .keras model)")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--resize", type=int, default=256, help="shorter side before cropping")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--runtime", choices=("keras", "onnx", "openvino"), default="keras",
                        help="keras (default), or an export run by onnxruntime / OpenVINO")
    parser.add_argument("--precision", choices=runtime_lib.PRECISIONS,
                        help="f32 (default; an export: its own); bf16, int8: --runtime openvino")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.crop > args.resize:
        print(f"keras-densenet classify: error: --crop {args.crop} exceeds --resize {args.resize}")
        return 2
    if args.precision not in (None, "f32") and args.runtime != "openvino":
        print(f"keras-densenet classify: error: --precision {args.precision} needs "
              "--runtime openvino")
        return 2
    exported = args.model and args.model.endswith(tuple(runtime_lib.RUNTIMES))
    with tempfile.TemporaryDirectory() as folder:
        try:
            if exported and args.runtime != "keras":
                model, expected = args.model, None
            else:
                model, expected = load_model(args.model, args.arch, args.weights,
                                             args.weights_source)
            preprocessing = args.preprocessing or expected or "torch"
            if args.runtime != "keras":
                model = runtime_model(model, args.runtime, args.precision, preprocessing, folder)
        except (ValueError, OSError) as error:
            print(f"keras-densenet classify: error: {error}")
            return 2
        return _print_predictions(classify(model, image_paths(args.images), preprocessing,
                                           args.top, args.resize, args.crop))


def _print_predictions(results):
    """Print each image's ranked classes (errors to stderr); exit code 1 if any failed."""
    failures = 0
    for path, predictions, error in results:
        if error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        print(path)
        for rank, (wordnet_id, name, score) in enumerate(predictions, start=1):
            print(f"  {rank}. {name:<30} {score:.4f}  ({wordnet_id})")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
