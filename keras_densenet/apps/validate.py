"""``keras-densenet validate``: top-1 / top-5 of a model on a labelled image folder, per runtime.

    keras-densenet validate imagenet/val --model densenet121.keras
    keras-densenet validate data/val --model runs/flowers/model.keras \\
        --runtimes onnx openvino-f32 openvino-int8 --calibration data/train/roses --json

DIR holds one sub-folder of images per class (the ImageNet validation layout,
or a ``train`` run's classes). A folder is the class of the model's recorded
``class_names`` it is named after; a model that records none takes the sorted
folder names as its classes in order (a 1000-class model whose folders are
ImageNet WordNet ids, ``n01440764``, ..., takes their ImageNet indices).
A folder that names no class of the model is an error.

Images are fed as the model's config says (``classify``'s eval transform:
shorter side resized to ``size / crop_pct`` with its interpolation, center
crop, its preprocessing). Keras (f32, the active backend) always runs; each
of ``--runtimes`` (``onnx``, ``openvino-f32``, ``openvino-bf16``,
``openvino-int8``) runs an export of the model (BN folded, preprocessing
baked in) made in a temporary folder; int8 is quantized with up to
``--calibration-size`` images of ``--calibration DIR`` (better not the
validated ones). Each runtime's row: top-1 and top-5 accuracy (%), and
against Keras on the same images: top-1 agreement (the share of images whose
best class is Keras's) and the largest absolute difference of the outputs
(logits, or probabilities for a softmax model). A runtime not installed or
not supported here is listed as skipped, with the reason. An unreadable image
is reported and left out (exit code 1).
"""

import argparse
import json
import os
import sys

from keras_densenet.apps.benchmark import RUNTIMES
from keras_densenet.apps.export import MODEL_EXTENSIONS
from keras_densenet.apps.images import is_image_name
from keras_densenet.checks import check_choice, check_positive_int
from keras_densenet.utils import check_input_path

TOP = 5
"""The wider accuracy: top-5 (top-k of every class for a model with fewer)."""


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", metavar="DIR", help="one sub-folder of images per class")
    parser.add_argument("--model", required=True, help="a .keras model file")
    parser.add_argument("--runtimes", nargs="+", default=["keras"], metavar="RUNTIME",
                        help=f"any of {', '.join(RUNTIMES)} (keras always runs; default: keras)")
    parser.add_argument("--calibration", metavar="DIR",
                        help="images to quantize openvino-int8 with (needed for it)")
    parser.add_argument("--calibration-size", type=int, default=300,
                        help="use at most this many images of --calibration (default 300)")
    parser.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    parser.add_argument("--json", action="store_true",
                        help="print the results as one JSON object instead of a table")
    return parser


def main(argv=None):
    return run(build_parser().parse_args(argv))


def run(args):
    runtimes = [check_choice("--runtimes", name, RUNTIMES)
                for name in dict.fromkeys(["keras", *args.runtimes])]
    check_positive_int("--batch-size", args.batch_size)
    check_positive_int("--calibration-size", args.calibration_size)
    check_input_path(args.folder, "DIR", "folder")
    check_input_path(args.model, "--model")
    if not args.model.endswith(MODEL_EXTENSIONS):
        raise ValueError(f"--model {args.model!r} is not a Keras model file "
                         f"({' or '.join(MODEL_EXTENSIONS)}).")
    if "openvino-int8" in runtimes and not args.calibration:
        raise ValueError("--runtimes openvino-int8 needs --calibration DIR (images to "
                         "quantize with).")
    if args.calibration:
        check_input_path(args.calibration, "--calibration", "folder")
    samples = labelled_images(args.folder)

    from keras_densenet.apps.classify import load_model

    model = load_model(args.model)
    report = validate(model, samples, args.folder, runtimes, args.calibration,
                      args.calibration_size, args.batch_size)
    for path in report["unreadable"]:
        print(f"error: {path}: not a readable image, left out", file=sys.stderr)
    print(json.dumps(report) if args.json else format_report(report))
    return 1 if report["unreadable"] else 0


def labelled_images(folder):
    """``[(image path, class folder name), ...]`` of ``folder``'s sub-folders, sorted; a
    one-line error if it holds none."""
    samples = [(os.path.join(folder, name, file), name)
               for name in sorted(os.listdir(folder)) if os.path.isdir(os.path.join(folder, name))
               for file in sorted(os.listdir(os.path.join(folder, name))) if is_image_name(file)]
    if not samples:
        raise ValueError(f"DIR {folder!r} holds no class sub-folders with images (one "
                         "sub-folder per class, as ImageNet's validation set).")
    return samples


def class_indices(folders, class_names, classes, folder):
    """``{class folder name: output index}`` for ``folders`` (see the module doc).

    ``class_names``: the model's recorded names or ``None``; ``classes``: its
    outputs. Raises a one-line ``ValueError`` for a folder that is no class.
    """
    from keras_densenet.preprocessing import imagenet_class_index

    folders = sorted(set(folders))
    if class_names:
        indices, order = {name: i for i, name in enumerate(class_names)}, "its class_names"
    else:
        wordnet = {wordnet_id: i for i, (wordnet_id, _) in imagenet_class_index().items()}
        if classes == 1000 and set(folders) <= set(wordnet):
            indices, order = wordnet, "ImageNet's WordNet ids"
        else:
            indices = {name: i for i, name in enumerate(folders[:classes])}
            order = f"the sorted folder names ({len(folders)} folders, {classes} outputs)"
    unknown = [name for name in folders if name not in indices]
    if unknown:
        raise ValueError(f"DIR {folder!r}: class folder {unknown[0]!r} is not a class of the "
                         f"model (classes from {order}).")
    return {name: indices[name] for name in folders}


def validate(model, samples, folder, runtimes, calibration=None, calibration_size=300,
             batch_size=32):
    """Accuracy of ``model`` on ``samples`` (``labelled_images``) under Keras and ``runtimes``.

    Returns a dict: ``folder``, ``images`` (read), ``classes`` (class folders),
    ``transform`` (the eval transform), ``results`` (one dict per runtime that
    ran, Keras first: ``runtime``, ``precision``, ``top1``, ``top5`` (%),
    ``top1_agreement`` (0-1) and ``max_abs_diff`` against Keras), ``skipped``
    (``{runtime: reason}``) and ``unreadable`` (paths left out).
    """
    import tempfile

    import numpy as np

    from keras_densenet.apps.benchmark import exported_predictors, runtime_precision
    from keras_densenet.apps.classify import model_input, serving_settings
    from keras_densenet.apps.images import read_batches
    from keras_densenet.apps.export import calibration_images
    from keras_densenet.export import serving_model
    from keras_densenet.config import model_config

    settings = serving_settings(model)
    classes = int(model.output.shape[-1])
    indices = class_indices([name for _, name in samples], model_config(model)["class_names"],
                            classes, folder)
    keras_model = serving_model(model, settings["preprocessing"])
    predictors = {"keras": keras_model.predict_on_batch}
    with tempfile.TemporaryDirectory() as exports:
        images = (calibration_images(calibration, model, calibration_size)
                  if "openvino-int8" in runtimes else None)
        served, skipped = exported_predictors(model, runtimes, exports, settings["preprocessing"],
                                              images)
        predictors.update((runtime, predictor.predict) for runtime, predictor in served.items())
        tallies = {runtime: dict(top1=0, top5=0, agree=0, max_abs_diff=0.0)
                   for runtime in predictors}
        unreadable, read, folder_of = [], 0, dict(samples)
        raw = {**settings, "preprocessing": None}  # uint8, as the exports take it
        for _, images, errors in read_batches(list(folder_of), settings, batch_size):
            unreadable.extend(errors)
            if not images:
                continue
            batch = model_input(list(images.values()), raw)
            read += len(batch)
            labels = np.array([indices[folder_of[path]] for path in images])
            expected = None
            for runtime, predict in predictors.items():
                outputs = np.asarray(predict(batch), dtype="float32")
                expected = outputs if expected is None else expected  # Keras runs first
                best = np.argsort(-outputs, axis=-1)[:, :TOP]
                tally = tallies[runtime]
                tally["top1"] += int(np.sum(best[:, 0] == labels))
                tally["top5"] += int(np.sum(np.any(best == labels[:, None], axis=-1)))
                tally["agree"] += int(np.sum(best[:, 0] == expected.argmax(-1)))
                tally["max_abs_diff"] = max(tally["max_abs_diff"],
                                            float(np.max(np.abs(outputs - expected))))
    if not read:
        raise ValueError(f"DIR {folder!r}: none of its {len(samples)} images is readable.")
    return dict(
        folder=folder, images=read, classes=len(indices),
        transform={key: settings[key] for key in ("size", "resize", "interpolation",
                                                  "preprocessing")},
        results=[dict(runtime=runtime, precision=runtime_precision(runtime),
                      top1=100 * tally["top1"] / read, top5=100 * tally["top5"] / read,
                      top1_agreement=tally["agree"] / read,
                      max_abs_diff=tally["max_abs_diff"]) for runtime, tally in tallies.items()],
        skipped=skipped, unreadable=unreadable)


def format_report(report):
    """The report of ``validate`` as a table (a header line, one row per runtime)."""
    transform = report["transform"]
    lines = [f"{report['folder']}: {report['images']} images, {report['classes']} classes; "
             f"resize {transform['resize']} {transform['interpolation']}, crop "
             f"{transform['size']}, {transform['preprocessing']} preprocessing",
             f"{'runtime':<14} {'precision':<9} {'top-1':>7} {'top-5':>7} "
             f"{'top-1 agreement':>15} {'max |diff|':>10}"]
    for row in report["results"]:
        lines.append(f"{row['runtime']:<14} {row['precision']:<9} {row['top1']:>7.2f} "
                     f"{row['top5']:>7.2f} {row['top1_agreement']:>15.4f} "
                     f"{row['max_abs_diff']:>10.2e}")
    lines.extend(f"{runtime:<14} skipped: {reason}" for runtime, reason in
                 report["skipped"].items())
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
