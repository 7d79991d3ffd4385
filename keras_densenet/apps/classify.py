"""``keras-densenet classify``: top-5 ImageNet classes of images, as published evaluations do.

    keras-densenet classify photo.jpg folder/ --arch densenet121 --weights imagenet
    keras-densenet classify photo.jpg --model my_model.keras --preprocessing torch

Each image is resized so that its shorter side is 256 pixels (bicubic), then
center-cropped to 224x224 (``--resize``/``--crop`` change this), and
preprocessed the way the weights expect (``torch`` or ``caffe_bgr``, from
the weights' source unless ``--preprocessing`` says otherwise). A file that is
not an image is reported and skipped; the exit code is 1 if any file failed.
"""

import argparse
import os
import sys

import numpy as np

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


def classify(model, paths, preprocessing, top=5, resize=256, crop=224, batch_size=16):
    """Yield ``(path, predictions or None, error or None)`` per image, in order."""
    channels_first = model_config(model)["data_format"] == "channels_first"
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
            x = preprocess_input(np.stack(images), mode=preprocessing)
            if channels_first:
                x = x.transpose(0, 3, 1, 2)
            decoded = dict(zip(batch_paths, decode_predictions(
                np.asarray(model.predict(x, verbose=0)), top=top)))
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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.crop > args.resize:
        print(f"keras-densenet classify: error: --crop {args.crop} exceeds --resize {args.resize}")
        return 2
    try:
        model, expected = load_model(args.model, args.arch, args.weights, args.weights_source)
    except (ValueError, OSError) as error:
        print(f"keras-densenet classify: error: {error}")
        return 2
    preprocessing = args.preprocessing or expected or "torch"
    failures = 0
    for path, predictions, error in classify(model, image_paths(args.images), preprocessing,
                                             args.top, args.resize, args.crop):
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
