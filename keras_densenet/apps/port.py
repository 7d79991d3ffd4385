"""``keras-densenet port``: convert published DenseNet weights to Keras 3 ``.weights.h5``.

    keras-densenet port densenet121-a639ec97.pth --arch densenet121 --out densenet121.weights.h5
    python -m keras_densenet.apps.port DenseNet-BC-121-32.h5 --arch densenet121 --out d121.weights.h5
    keras-densenet port densenetblur121d.ra_in1k.safetensors --arch densenetblur121d \
        --out blur.weights.h5
    keras-densenet port densenet_121_imagenet/ --arch densenet121 --out d121-hub.weights.h5
    keras-densenet port rdnet_tiny.nv_in1k.safetensors --arch rdnet_tiny --out rdnet_tiny.weights.h5

The source format is detected from the file, or the keras-hub preset directory
(``keras_densenet.weights.detect``). The port checks itself: when the source
framework is installed (tf_keras for the Keras 2 files, torch for torchvision
state dicts, timm for timm's, keras-hub for its presets) it runs the source implementation
(``source_models.REFERENCES``) and ours on the same images and prints the largest
absolute difference. The written file records the source's BN epsilon, stem
padding and preprocessing, so ``DenseNetImageNet121(weights=PATH)`` builds the right model.
"""

import argparse

from keras_densenet.architectures import IMAGENET_VARIANTS, RDNET_VARIANTS
from keras_densenet.utils import check_input_path, check_output_path

VERIFY_SIZE = 96  # even: TF "same" and symmetric stem padding differ only there; small: fast


def port(source, architecture, output, include_top=True, data_format="channels_last",
         verify=True, overwrite=False):
    """Write ``source``'s weights as a Keras 3 weights file for our ``architecture``.

    ``output`` is written atomically; an existing one raises
    ``FileExistsError`` unless ``overwrite``, and ``source`` itself is refused.
    Returns ``(model, max_abs_diff)``; ``max_abs_diff`` is ``None`` when the
    source framework is not installed or ``verify`` is off.
    """
    from keras_densenet import weights
    from keras_densenet.presets import DenseNetImageNet
    from keras_densenet.rdnet import RDNet

    if not output.endswith(".weights.h5"):
        raise ValueError(f"--out must end with .weights.h5 (Keras 3 weights); got {output!r}.")
    check_output_path(output, overwrite, inputs=[source], argument="--out")
    if architecture in RDNET_VARIANTS:
        model = RDNet(architecture, weights=source, include_top=include_top,
                      data_format=data_format)
    else:
        model = DenseNetImageNet(architecture, weights=source, include_top=include_top,
                                 activation=None, data_format=data_format)
    fmt = weights.detect(source)
    requirements = fmt.requirements(source)
    weights.save_weights(model, output, **{key: requirements[key] for key in weights.keras3.METADATA})
    difference = None
    if verify:
        try:
            difference = max_difference_from_source(model, source, fmt.name, architecture,
                                                    include_top, data_format)
        except ImportError as error:
            print(f"not verified against the source implementation: {error}")
    return model, difference


def max_difference_from_source(model, source, file_format, architecture, include_top,
                               data_format):
    """Largest |ours - source implementation| over the outputs for random images."""
    import keras
    import numpy as np

    from keras_densenet.apps.source_models import REFERENCES

    if file_format not in REFERENCES:
        raise ImportError(f"no source implementation is known for {file_format} files")
    images = np.random.default_rng(0).normal(size=(2, VERIFY_SIZE, VERIFY_SIZE, 3))
    images = images.astype("float32")
    reference = REFERENCES[file_format](source, architecture, include_top, images)
    ours_input = images if data_format == "channels_last" else images.transpose(0, 3, 1, 2)
    ours = keras.ops.convert_to_numpy(model(ours_input, training=False))
    if ours.ndim == 4 and data_format == "channels_first":
        ours = ours.transpose(0, 2, 3, 1)
    return float(np.max(np.abs(ours - reference)))


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet port", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a .h5, .pth or .safetensors weights file, or a "
                        "keras-hub DenseNet preset directory")
    parser.add_argument("--arch", required=True, choices=(*IMAGENET_VARIANTS, *RDNET_VARIANTS))
    parser.add_argument("--out", required=True, help="output .weights.h5 path")
    parser.add_argument("--data-format", default="channels_last",
                        choices=("channels_last", "channels_first"))
    parser.add_argument("--no-top", dest="include_top", action="store_false",
                        help="port the feature extractor only")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the comparison with the source implementation")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (never the source file)")
    return parser


def run(args):
    from keras_densenet import weights

    check_input_path(args.source, "source", "file or folder")
    model, difference = port(args.source, args.arch, args.out, args.include_top,
                             args.data_format, args.verify, args.overwrite)
    fmt = weights.detect(args.source)
    requirements = fmt.requirements(args.source)
    print(f"read {args.source} as {fmt.description}")
    print(f"wrote {args.out}: {model.name}, include_top={args.include_top}, "
          f"{args.data_format}, bn_epsilon={requirements['bn_epsilon']}, "
          f"stem_padding={requirements['stem_padding']!r}, "
          f"preprocessing={requirements['preprocessing']!r}")
    if difference is not None:
        print(f"max |ours - source implementation| = {difference:.3g} "
              f"(random {VERIFY_SIZE}x{VERIFY_SIZE} images)")
    return 0


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
