"""``keras-densenet port``: convert published DenseNet weights to Keras 3 ``.weights.h5``.

    keras-densenet port densenet121-a639ec97.pth --arch densenet121 --out densenet121.weights.h5
    python -m keras_densenet.port DenseNet-BC-121-32.h5 --arch densenet121 --out d121.weights.h5

The source format is detected from the file (see ``keras_densenet.weight_formats``).
The port checks itself: when the source framework is installed (tf_keras for
the Keras 2 files, torch for state dicts) it runs the source implementation and
ours on the same images and prints the largest absolute logit difference.
The written file records the source's BN epsilon, stem padding and
preprocessing, so ``DenseNetImageNet121(weights=PATH)`` builds the right model.
"""

import argparse
import os

import keras
import numpy as np

from keras_densenet import weight_formats
from keras_densenet.architectures import IMAGENET_ARCHITECTURES
from keras_densenet.presets import DenseNetImageNet
from keras_densenet.weights import save_weights

VERIFY_SIZE = 96  # even: TF "same" and symmetric stem padding differ only there; small: fast


def port(source, architecture, output, include_top=True, data_format="channels_last",
         verify=True):
    """Write ``source``'s weights as a Keras 3 weights file for our ``architecture``.

    Returns ``(model, max_abs_diff)``; ``max_abs_diff`` is ``None`` when the
    source framework is not installed or ``verify`` is off.
    """
    if not output.endswith(".weights.h5"):
        raise ValueError(f"--out must end with .weights.h5 (Keras 3 weights); got {output!r}.")
    model = DenseNetImageNet(architecture, weights=source, include_top=include_top,
                             activation=None, data_format=data_format)
    spec = weight_formats.FORMATS[weight_formats.detect(source)]
    save_weights(model, output, bn_epsilon=spec.bn_epsilon, stem_padding=spec.stem_padding,
                 preprocessing=spec.preprocessing)
    difference = None
    if verify:
        try:
            difference = max_difference_from_source(model, source, architecture, include_top,
                                                    data_format)
        except ImportError as error:
            print(f"not verified against the source implementation: {error}")
    return model, difference


def max_difference_from_source(model, source, architecture, include_top, data_format):
    """Largest |ours - source implementation| over the outputs for random images."""
    file_format = weight_formats.detect(source)
    images = np.random.default_rng(0).normal(size=(2, VERIFY_SIZE, VERIFY_SIZE, 3))
    images = images.astype("float32")
    reference = _reference_outputs(file_format, source, architecture, include_top, images)
    ours_input = images if data_format == "channels_last" else images.transpose(0, 3, 1, 2)
    ours = keras.ops.convert_to_numpy(model(ours_input, training=False))
    if ours.ndim == 4 and data_format == "channels_first":
        ours = ours.transpose(0, 2, 3, 1)
    return float(np.max(np.abs(ours - reference)))


def _reference_outputs(file_format, source, architecture, include_top, images):
    if file_format == "keras3":
        raise ImportError("the source is already a Keras 3 file of this package")
    if file_format == "keras_applications":
        import tf_keras

        constructor = getattr(tf_keras.applications, _keras_applications_name(architecture))
        reference = constructor(weights=None, include_top=include_top,
                                input_shape=images.shape[1:], classifier_activation=None)
        reference.load_weights(source)
        return reference(images, training=False).numpy()
    if file_format == "original_keras":
        from keras_densenet.references import original_keras_densenet

        reference = original_keras_densenet(architecture, include_top, images.shape[1:])
        reference.load_weights(source)
        return reference(images, training=False).numpy()
    import torch

    from keras_densenet.references import torch_densenet

    state = (weight_formats._load_torch(source) if file_format == "torch"
             else {k: torch.from_numpy(v.copy()) for k, v in _safetensors(source).items()})
    reference = torch_densenet(architecture)
    reference.load_state_dict(weight_formats.normalize_torch_keys(state))
    reference.eval()
    with torch.no_grad():
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        if include_top:
            return reference(x).numpy()
        features = torch.relu(reference.features(x))
        return features.numpy().transpose(0, 2, 3, 1)


def _safetensors(path):
    from safetensors.numpy import load_file

    return load_file(path)


def _keras_applications_name(architecture):
    return "DenseNet" + architecture[len("densenet"):]


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet port", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a .h5, .pth or .safetensors weights file")
    parser.add_argument("--arch", required=True, choices=sorted(IMAGENET_ARCHITECTURES))
    parser.add_argument("--out", required=True, help="output .weights.h5 path")
    parser.add_argument("--data-format", default="channels_last",
                        choices=("channels_last", "channels_first"))
    parser.add_argument("--no-top", dest="include_top", action="store_false",
                        help="port the feature extractor only")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the comparison with the source implementation")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not os.path.isfile(args.source):
        print(f"keras-densenet port: error: no such file {args.source!r}")
        return 2
    try:
        file_format = weight_formats.detect(args.source)
        model, difference = port(args.source, args.arch, args.out, args.include_top,
                                 args.data_format, args.verify)
    except (ValueError, ImportError) as error:
        print(f"keras-densenet port: error: {error}")
        return 2
    spec = weight_formats.FORMATS[file_format]
    print(f"read {args.source} as {spec.description}")
    print(f"wrote {args.out}: {model.name}, include_top={args.include_top}, "
          f"{args.data_format}, bn_epsilon={spec.bn_epsilon}, stem_padding={spec.stem_padding!r}, "
          f"preprocessing={spec.preprocessing!r}")
    if difference is not None:
        print(f"max |ours - source implementation| = {difference:.3g} "
              f"(random {VERIFY_SIZE}x{VERIFY_SIZE} images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
