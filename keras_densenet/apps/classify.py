"""``keras-densenet classify``: the top classes of images, with any model this package makes.

    keras-densenet classify photo.png --model runs/digits/model.keras   # a model `train` made
    keras-densenet classify photo.jpg folder/ --arch densenet121 --weights imagenet
    keras-densenet classify photos/ --model model.keras --json          # one JSON line per image
    keras-densenet classify photos/ --model model.keras --cam heatmaps/ # + a Grad-CAM PNG each

The model's recorded config (``keras_densenet.model_config``) says how to
feed it: input size, preprocessing (``torch``/``caffe_bgr``), eval transform
(resize the shorter side to ``size / crop_pct`` with its interpolation, then
center-crop ``size``) and class names (ImageNet's for a 1000-class model
without names). ``--crop``, ``--resize`` and ``--preprocessing`` override it
where the model allows. A file that is not a readable image (or too large to
decode safely) is reported and the others still run; the exit code is then 1.

A multi-label model (config ``multi_label: true``, per-label ``thresholds``)
shows each label's score and the labels whose score reaches their threshold.

``--cam OUT`` also writes each image (as the model sees it: resized and
cropped) with the Grad-CAM heatmap of its top class overlaid
(``keras_densenet.explain``) to ``OUT/<image name>.png``; a file already
there is refused unless ``--overwrite``. It needs the Keras runtime.

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
import numbers
import os
import sys
import tempfile

from keras_densenet.apps.images import IMAGE_EXTENSIONS, image_paths, read_batches
from keras_densenet.architectures import IMAGENET_VARIANTS
from keras_densenet.checks import check_positive_int
from keras_densenet.runtime import PRECISIONS, RUNTIMES
from keras_densenet.utils import atomic_path, check_input_path, check_output_path

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
    before cropping), ``interpolation``, ``channels`` (of the input image: 3
    for RGB, 1 for gray, or more bands), ``preprocessing`` mode,
    ``data_format``, ``class_names`` (one per output) and ``thresholds``:
    for a multi-label model (config ``multi_label: true``) the score from
    which each label is given (the config's ``thresholds``, else 0.5 each),
    else ``None``. Raises a one-line ``ValueError`` for an override the model
    cannot take or a config that does not fit the model.
    """
    from keras_densenet.config import min_image_size, model_config

    config = model_config(model)
    data_format = config["data_format"]
    spatial = config["input_shape"][:2] if data_format == "channels_last" else (
        config["input_shape"][1:])
    channels = config["input_shape"][-1 if data_format == "channels_last" else 0] or 3
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
                channels=channels, preprocessing=preprocessing or config.get("preprocessing") or "torch",
                data_format=data_format, class_names=list(names),
                thresholds=label_thresholds(config, classes))


def label_thresholds(config, classes):
    """The per-label thresholds of a multi-label ``config`` (``multi_label: true``; its
    ``thresholds``, else 0.5 for each of ``classes``), ``None`` for a single-label one."""
    multi_label = config.get("multi_label", False)
    if not isinstance(multi_label, bool):
        raise ValueError(f"the model records multi_label={multi_label!r}; it must be true or "
                         "false.")
    if not multi_label:
        return None
    thresholds = config.get("thresholds") or [0.5] * classes
    if len(thresholds) != classes or not all(
            isinstance(t, numbers.Real) and not isinstance(t, bool) and 0 <= t <= 1
            for t in thresholds):
        raise ValueError(f"the model records thresholds {thresholds!r}; a multi-label model "
                         f"needs one number in [0, 1] for each of its {classes} outputs.")
    return [float(t) for t in thresholds]


def exported_settings(predictor, crop=None, resize=None, preprocessing=None):
    """How to feed an exported file (which records no config): as an ImageNet model.

    Its input size if fixed (else ``crop`` or 224), resize to ``size / 0.875``
    (bicubic), raw uint8 images if its preprocessing is baked in (else
    ``preprocessing``, default ``torch``); class names as ``default_names``.
    """
    shape = predictor.input_shape
    data_format = "channels_first" if shape[1] == 3 and shape[-1] != 3 else "channels_last"
    fixed = shape[2] if data_format == "channels_first" else shape[1]
    channels = (shape[1] if data_format == "channels_first" else shape[-1]) or 3
    if fixed is not None and crop is not None and crop != fixed:
        raise ValueError(f"--crop {crop}: this export takes {fixed}x{fixed} images only.")
    size = fixed or crop or DEFAULT_CROP
    resize = resize or int(round(size / 0.875))
    if resize < size:
        raise ValueError(f"--resize {resize} is smaller than the {size}-pixel crop.")
    raw = predictor.input_dtype == "uint8"
    return dict(size=size, resize=resize, interpolation="bicubic", channels=channels,
                preprocessing=None if raw else preprocessing or "torch",
                data_format=data_format, class_names=None, thresholds=None)


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
    """Yield ``(path, [(label, index, score), ...] or None, error or None)``: the ``top``
    classes best first; for a multi-label model (``settings["thresholds"]``) every label,
    in class order.

    ``scores`` maps a preprocessed batch (``settings["data_format"]``,
    float32; raw uint8 when ``settings["preprocessing"]`` is ``None``) to
    ``(batch, classes)`` scores (``keras_scores(model)``, a runtime predictor's
    ``predict``); images are read and preprocessed as ``settings`` say.
    """
    import numpy as np

    names = settings["class_names"]
    for chunk, images, errors in read_batches(paths, settings, batch_size):
        results = {}
        if images:
            batch_scores = np.asarray(scores(model_input(list(images.values()), settings)))
            names = names or default_names(batch_scores.shape[-1])
            for path, row in zip(images, batch_scores):
                shown = (range(len(row)) if settings["thresholds"]
                         else np.argsort(row)[::-1][:top])
                results[path] = [(names[i], int(i), float(row[i])) for i in shown]
        for path in chunk:
            yield path, results.get(path), errors.get(path)


def model_input(images, settings):
    """The batch that the model takes for uint8 ``images`` (a list of ``(H, W, C)``):
    preprocessed with ``settings["preprocessing"]`` (raw uint8 if ``None``), in
    ``settings["data_format"]``."""
    import numpy as np

    from keras_densenet.preprocessing import preprocess_input

    x = np.stack(images)
    if settings["preprocessing"]:
        x = preprocess_input(x, mode=settings["preprocessing"], data_format="channels_last")
    return x.transpose(0, 3, 1, 2) if settings["data_format"] == "channels_first" else x


def heatmap_paths(paths, folder, overwrite=False):
    """``{image path: folder/<image name>.png}``, checked before any work: one-line errors
    when two images would share a file, when a file is there already (unless
    ``overwrite``) or when it would replace one of the images."""
    images = {os.path.realpath(path) for path in paths}
    owners = {}  # output file: the image it shows
    for path in dict.fromkeys(paths):
        output = os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + ".png")
        if output in owners:
            raise ValueError(f"--cam: {owners[output]!r} and {path!r} would both be written "
                             f"to {output!r}; rename one of them.")
        if os.path.realpath(output) in images:
            raise ValueError(f"--cam {output!r} is one of the images; choose another folder.")
        check_output_path(output, overwrite, argument="--cam")
        owners[output] = path
    return {path: output for output, path in owners.items()}


def write_heatmaps(model, paths, settings, outputs, batch_size=16, overwrite=False):
    """Write each readable image of ``paths``, as the model sees it (``settings``' crop), with
    its Grad-CAM heatmap for its top class overlaid, to ``outputs[path]`` (PNG, written
    atomically; ``keras_densenet.explain``). Unreadable images are skipped (``classify``
    reports them)."""
    from keras_densenet.explain import cam_models, heatmaps, overlay

    models = cam_models(model)
    for _, images, _ in read_batches(paths, settings, batch_size):
        if images:
            maps = heatmaps(models, model_input(list(images.values()), settings))
            for (path, image), heatmap in zip(images.items(), maps):
                preview = image if image.shape[-1] in (1, 3) else image[..., :1]  # first band
                save_png(outputs[path], overlay(image=preview, heatmap=heatmap), overwrite)


def save_png(path, pixels, overwrite=False):
    """Write uint8 ``pixels`` (``(H, W, 3)`` RGB) to ``path`` as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path, overwrite) as temporary:
        Image.fromarray(pixels).save(temporary, format="PNG")


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--model", help="a .keras model (e.g. runs/digits/model.keras); "
                                        "without it, --arch with --weights")
    parser.add_argument("--arch", default="densenet121", choices=IMAGENET_VARIANTS,
                        help="ImageNet preset without --model (default: %(default)s)")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' or a weights file, without --model (default: %(default)s)")
    parser.add_argument("--weights-source", help="which published ImageNet weights "
                                                 "(keras_densenet.weights.SOURCES)")
    parser.add_argument("--preprocessing", choices=PREPROCESSING_MODES,
                        help="default: what the model records (torch if it records none)")
    parser.add_argument("--top", type=int, default=5,
                        help="classes per image (default: 5); a multi-label model shows every "
                             "label")
    parser.add_argument("--crop", type=int, help="input size for a model that takes any size "
                                                 f"(default: {DEFAULT_CROP})")
    parser.add_argument("--resize", type=int,
                        help="shorter side before cropping (default: crop / the model's crop_pct)")
    parser.add_argument("--batch-size", type=int, default=16, help="default: %(default)s")
    parser.add_argument("--runtime", choices=("keras", "onnx", "openvino"), default="keras",
                        help="keras (default), or an export run by onnxruntime / OpenVINO")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="f32 (default; an export: its own); bf16, int8: --runtime openvino")
    parser.add_argument("--cam", metavar="OUT",
                        help="also write each image with its Grad-CAM heatmap (top class) "
                             "overlaid to OUT/<image name>.png (OUT is created if missing)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --cam, replace files already in OUT")
    parser.add_argument("--json", action="store_true",
                        help='one JSON object per image: {"path", "top": [{"label", "index", '
                             '"score"}]}, for a multi-label model {"path", "labels": [...], '
                             '"scores": [{"label", "index", "score", "threshold"}]}, or '
                             '{"path", "error"}')
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
    outputs = _heatmap_outputs(args, paths) if args.cam else None
    with tempfile.TemporaryDirectory() as folder:
        settings, scores, model = _scorer(args, folder)
        code = _print_results(classify(paths, settings, scores, args.top, args.batch_size),
                              args.json, settings["thresholds"])
    if outputs:
        write_heatmaps(model, paths, settings, outputs, args.batch_size, args.overwrite)
    return code


def _heatmap_outputs(args, paths):
    """``heatmap_paths`` in the ``--cam`` folder (created), after checking that gradients can
    be taken: a Keras model run by Keras."""
    if args.runtime != "keras" or (args.model and args.model.endswith(tuple(RUNTIMES))):
        raise ValueError("--cam needs a Keras model run by Keras (--runtime keras, a .keras "
                         "--model or --arch): Grad-CAM takes gradients.")
    if os.path.exists(args.cam) and not os.path.isdir(args.cam):
        raise ValueError(f"--cam {args.cam!r} is a file; name a folder.")
    os.makedirs(args.cam, exist_ok=True)
    return heatmap_paths(paths, args.cam, args.overwrite)


def _scorer(args, folder):
    """``(settings, scores, Keras model or None)`` for the model and runtime the arguments
    name."""
    from keras_densenet import runtime

    exported = args.model and args.model.endswith(tuple(RUNTIMES))
    if exported:
        if RUNTIMES[os.path.splitext(args.model)[1]] != args.runtime:
            raise ValueError(f"--model {args.model!r} is an export: run it with --runtime "
                             f"{RUNTIMES[os.path.splitext(args.model)[1]]}.")
        predictor = runtime.load(args.model, args.precision)
        return exported_settings(predictor, args.crop, args.resize, args.preprocessing), (
            predictor.predict), None
    model = load_model(args.model, args.arch, args.weights, args.weights_source)
    settings = serving_settings(model, args.crop, args.resize, args.preprocessing)
    if args.runtime == "keras":
        return settings, keras_scores(model), model
    if args.precision == "int8":
        raise ValueError("--precision int8 needs --model an int8 .xml (keras-densenet export "
                         "--format openvino --preprocessing MODE --calibration DIR).")
    from keras_densenet.export import export

    path = os.path.join(folder, "model.onnx" if args.runtime == "onnx" else "model.xml")
    export(model, path, args.runtime, fuse=True)
    return settings, runtime.load(path, args.precision).predict, model


def _print_results(results, as_json, thresholds=None):
    """Print each image's ranked classes, or with ``thresholds`` (a multi-label model) each
    label's score and the labels given; errors to stderr; exit code 1 if any failed."""
    failures = 0
    for path, predictions, error in results:
        failures += error is not None
        if error:
            if as_json:
                print(json.dumps({"path": path, "error": error}), flush=True)
            print(f"error: {error}", file=sys.stderr)
        elif thresholds:
            _print_labels(path, predictions, thresholds, as_json)
        elif as_json:
            print(json.dumps({"path": path, "top": [
                {"label": label, "index": index, "score": score}
                for label, index, score in predictions]}), flush=True)
        else:
            print(path)
            for rank, (label, index, score) in enumerate(predictions, start=1):
                print(f"  {rank}. {label:<30} {score:.4f}")
    return 1 if failures else 0


def _print_labels(path, predictions, thresholds, as_json):
    """One multi-label image: each label's score and threshold, then the labels whose score
    reaches their threshold."""
    given = [label for label, index, score in predictions if score >= thresholds[index]]
    if as_json:
        print(json.dumps({"path": path, "labels": given, "scores": [
            {"label": label, "index": index, "score": score, "threshold": thresholds[index]}
            for label, index, score in predictions]}), flush=True)
        return
    print(path)
    for label, index, score in predictions:
        mark = "  +" if score >= thresholds[index] else ""
        print(f"  {label:<30} {score:.4f}  (threshold {thresholds[index]:.4f}){mark}")
    print(f"  labels: {', '.join(given) or '(none)'}")


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
