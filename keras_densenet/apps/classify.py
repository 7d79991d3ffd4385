"""``keras-densenet classify``: the top classes of images, with any model this package makes.

    keras-densenet classify photo.png --model runs/digits/model.keras   # a model `train` made
    keras-densenet classify photo.jpg folder/ --arch densenet121 --weights imagenet
    keras-densenet classify photos/ --model model.keras --json          # one JSON line per image

The model's recorded config (``keras_densenet.model_config``) says how to
feed it: input size, preprocessing (``torch``/``caffe_bgr``), eval transform
(resize the shorter side to ``size / crop_pct`` with its interpolation, then
center-crop ``size``) and class names (ImageNet's for a 1000-class model
without names). ``--crop``, ``--resize`` and ``--preprocessing`` override it
where the model allows. A file that is not a readable image (or too large to
decode safely) is reported and the others still run; the exit code is then 1.

``--runtime onnx|openvino`` runs the model through ``keras_densenet.runtime``:
a Keras model is exported first (BN folded) to a temporary file; an exported
``--model`` (``.onnx``/``.xml``) runs as it is, fed as ImageNet models are
(224 px unless it is fixed otherwise, raw uint8 if preprocessing is baked in).
``--precision bf16`` needs OpenVINO on a CPU with bfloat16; ``int8`` needs an
IR quantized by ``keras-densenet export --format openvino --calibration DIR``.

    keras-densenet classify photo.jpg --runtime openvino
    keras-densenet classify photo.jpg --runtime openvino --precision int8 --model m_int8.xml
"""

import argparse
import json
import os
import sys
import tempfile

from keras_densenet.apps.images import IMAGE_EXTENSIONS, image_paths, load_image
from keras_densenet.architectures import IMAGENET_ARCHITECTURES
from keras_densenet.checks import check_positive_int
from keras_densenet.runtime import PRECISIONS, RUNTIMES
from keras_densenet.utils import check_input_path

PREPROCESSING_MODES = ("torch", "caffe_bgr")  # keras_densenet.preprocessing.MODES, without Keras
DEFAULT_CROP = 224
"""Input size of a model that takes any size, unless ``--crop`` says otherwise."""
UNKNOWN_DOWNSAMPLINGS = 5
"""How many times a model of unknown architecture is taken to halve the image (ImageNet's)."""


def load_model(model_path=None, architecture="densenet121", weights="imagenet",
               weights_source=None):
    """A Keras model from a ``.keras`` file, or the ``architecture`` preset with ``weights``."""
    import keras

    from keras_densenet.presets import DenseNetImageNet

    if model_path:
        check_input_path(model_path, "--model")
        return keras.models.load_model(model_path)
    return DenseNetImageNet(architecture, weights=weights, weights_source=weights_source)


def serving_settings(model, crop=None, resize=None, preprocessing=None):
    """How to feed ``model``, from its recorded config and the overrides given.

    Returns a dict: ``size`` (square crop, pixels), ``resize`` (shorter side
    before cropping), ``interpolation``, ``preprocessing`` mode,
    ``data_format``, ``class_names`` (one per output). Raises a one-line
    ``ValueError`` for an override the model cannot take.
    """
    from keras_densenet.model import min_image_size, model_config

    config = model_config(model)
    data_format = config["data_format"]
    spatial = config["input_shape"][:2] if data_format == "channels_last" else (
        config["input_shape"][1:])
    if spatial[0] is not None or spatial[1] is not None:
        if spatial[0] != spatial[1]:
            raise ValueError(f"the model takes {spatial[0]}x{spatial[1]} images; classify "
                             "feeds square center crops.")
        if crop is not None and crop != spatial[0]:
            raise ValueError(f"--crop {crop}: this model takes {spatial[0]}x{spatial[0]} "
                             "images only; leave --crop out.")
        size = spatial[0]
    else:
        size = crop or DEFAULT_CROP
        minimum = min_image_size(config) or 2 ** UNKNOWN_DOWNSAMPLINGS
        if size < minimum:
            raise ValueError(f"--crop {size} is too small: this model halves the image "
                             f"{minimum.bit_length() - 1} times, so it needs at least {minimum} "
                             "pixels.")
    resize = resize or int(round(size / (config.get("crop_pct") or 1.0)))
    if resize < size:
        raise ValueError(f"--resize {resize} is smaller than the {size}-pixel crop.")
    classes = int(model.output.shape[-1])
    names = config.get("class_names") or default_names(classes)
    if len(names) != classes:
        raise ValueError(f"the model records {len(names)} class names for {classes} outputs.")
    return dict(size=size, resize=resize, interpolation=config.get("interpolation") or "bicubic",
                preprocessing=preprocessing or config.get("preprocessing") or "torch",
                data_format=data_format, class_names=list(names))


def exported_settings(predictor, crop=None, resize=None, preprocessing=None):
    """How to feed an exported file (which records no config): as an ImageNet model.

    Its input size if fixed (else ``crop`` or 224), resize to ``size / 0.875``
    (bicubic), raw uint8 images if its preprocessing is baked in (else
    ``preprocessing``, default ``torch``); class names as ``default_names``.
    """
    shape = predictor.input_shape
    data_format = "channels_first" if shape[1] == 3 and shape[-1] != 3 else "channels_last"
    fixed = shape[2] if data_format == "channels_first" else shape[1]
    if fixed is not None and crop is not None and crop != fixed:
        raise ValueError(f"--crop {crop}: this export takes {fixed}x{fixed} images only.")
    size = fixed or crop or DEFAULT_CROP
    resize = resize or int(round(size / 0.875))
    if resize < size:
        raise ValueError(f"--resize {resize} is smaller than the {size}-pixel crop.")
    raw = predictor.input_dtype == "uint8"
    return dict(size=size, resize=resize, interpolation="bicubic",
                preprocessing=None if raw else preprocessing or "torch",
                data_format=data_format, class_names=None)


def default_names(classes):
    """ImageNet's class names for 1000 classes, else ``class 0``, ``class 1``, ..."""
    from keras_densenet.preprocessing import imagenet_class_index

    if classes == 1000:
        return [name for _, name in (imagenet_class_index()[i] for i in range(1000))]
    return [f"class {index}" for index in range(classes)]


def keras_scores(model):
    """``batch -> (batch, classes)`` scores of a Keras model, as NumPy."""
    import numpy as np

    return lambda batch: np.asarray(model.predict(batch, verbose=0))


def classify(paths, settings, scores, top=5, batch_size=16):
    """Yield ``(path, [(label, index, score), ...] best first, or None, error or None)``.

    ``scores`` maps a preprocessed batch (``settings["data_format"]``,
    float32; raw uint8 when ``settings["preprocessing"]`` is ``None``) to
    ``(batch, classes)`` scores (``keras_scores(model)``, a runtime predictor's
    ``predict``); images are read and preprocessed as ``settings`` say.
    """
    import numpy as np

    from keras_densenet.preprocessing import preprocess_input

    names = settings["class_names"]
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        loaded, errors = [], {}
        for path in chunk:
            try:
                loaded.append((path, load_image(path, settings["resize"], settings["size"],
                                                settings["interpolation"])))
            except (ValueError, FileNotFoundError) as error:
                errors[path] = str(error)
        results = {}
        if loaded:
            x = np.stack([image for _, image in loaded])
            if settings["preprocessing"]:
                x = preprocess_input(x, mode=settings["preprocessing"],
                                     data_format="channels_last")
            if settings["data_format"] == "channels_first":
                x = x.transpose(0, 3, 1, 2)
            batch_scores = np.asarray(scores(x))
            names = names or default_names(batch_scores.shape[-1])
            for (path, _), row in zip(loaded, batch_scores):
                best = np.argsort(row)[::-1][:top]
                results[path] = [(names[i], int(i), float(row[i])) for i in best]
        for path in chunk:
            yield path, results.get(path), errors.get(path)


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--model", help="a .keras model (e.g. runs/digits/model.keras); "
                                        "without it, --arch with --weights")
    parser.add_argument("--arch", default="densenet121", choices=sorted(IMAGENET_ARCHITECTURES),
                        help="ImageNet preset without --model (default: %(default)s)")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' or a weights file, without --model (default: %(default)s)")
    parser.add_argument("--weights-source", help="which published ImageNet weights "
                                                 "(keras_densenet.weights.SOURCES)")
    parser.add_argument("--preprocessing", choices=PREPROCESSING_MODES,
                        help="default: what the model records (torch if it records none)")
    parser.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
    parser.add_argument("--crop", type=int, help="input size for a model that takes any size "
                                                 f"(default: {DEFAULT_CROP})")
    parser.add_argument("--resize", type=int,
                        help="shorter side before cropping (default: crop / the model's crop_pct)")
    parser.add_argument("--batch-size", type=int, default=16, help="default: %(default)s")
    parser.add_argument("--runtime", choices=("keras", "onnx", "openvino"), default="keras",
                        help="keras (default), or an export run by onnxruntime / OpenVINO")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="f32 (default; an export: its own); bf16, int8: --runtime openvino")
    parser.add_argument("--json", action="store_true",
                        help='one JSON object per image: {"path", "top": [{"label", "index", '
                             '"score"}]} or {"path", "error"}')
    return parser


def run(args):
    for flag, value in (("--top", args.top), ("--batch-size", args.batch_size),
                        ("--crop", args.crop), ("--resize", args.resize)):
        if value is not None:
            check_positive_int(flag, value)
    paths = image_paths(args.images)
    if not paths:
        raise ValueError(f"no images in {args.images}: folders are searched for "
                         f"{'/'.join(IMAGE_EXTENSIONS)} files.")
    if args.precision not in (None, "f32") and args.runtime != "openvino":
        raise ValueError(f"--precision {args.precision} needs --runtime openvino.")
    with tempfile.TemporaryDirectory() as folder:
        settings, scores = _scorer(args, folder)
        return _print_results(classify(paths, settings, scores, args.top, args.batch_size),
                              args.json)


def _scorer(args, folder):
    """``(settings, scores)`` for the model and runtime the arguments name."""
    from keras_densenet import runtime

    exported = args.model and args.model.endswith(tuple(RUNTIMES))
    if exported:
        if RUNTIMES[os.path.splitext(args.model)[1]] != args.runtime:
            raise ValueError(f"--model {args.model!r} is an export: run it with --runtime "
                             f"{RUNTIMES[os.path.splitext(args.model)[1]]}.")
        predictor = runtime.load(args.model, args.precision)
        return exported_settings(predictor, args.crop, args.resize, args.preprocessing), (
            predictor.predict)
    model = load_model(args.model, args.arch, args.weights, args.weights_source)
    settings = serving_settings(model, args.crop, args.resize, args.preprocessing)
    if args.runtime == "keras":
        return settings, keras_scores(model)
    if args.precision == "int8":
        raise ValueError("--precision int8 needs --model an int8 .xml (keras-densenet export "
                         "--format openvino --preprocessing MODE --calibration DIR).")
    from keras_densenet.export import export

    path = os.path.join(folder, "model.onnx" if args.runtime == "onnx" else "model.xml")
    export(model, path, args.runtime, fuse=True)
    return settings, runtime.load(path, args.precision).predict


def _print_results(results, as_json):
    """Print each image's ranked classes (errors to stderr); exit code 1 if any failed."""
    failures = 0
    for path, predictions, error in results:
        failures += error is not None
        if as_json:
            record = {"path": path, "error": error} if error else {"path": path, "top": [
                {"label": label, "index": index, "score": score}
                for label, index, score in predictions]}
            print(json.dumps(record), flush=True)
        if error:
            print(f"error: {error}", file=sys.stderr)
        elif not as_json:
            print(path)
            for rank, (label, index, score) in enumerate(predictions, start=1):
                print(f"  {rank}. {label:<30} {score:.4f}")
    return 1 if failures else 0


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
