"""The ``keras-densenet`` command: one subcommand per module.

Each subcommand lives in its own module, which provides ``main(argv)``;
``keras-densenet SUBCOMMAND --help`` shows its options.
"""

import importlib
import os
import sys

COMMANDS = {
    # subcommand: (module, one-line help)
    "summary": ("keras_densenet.apps.summary", "parameter counts of every preset"),
    "classify": ("keras_densenet.apps.classify", "top-5 ImageNet classes of images"),
    "export": ("keras_densenet.apps.export", "export a .keras model: SavedModel, ONNX, TFLite"),
    "port": ("keras_densenet.apps.port", "convert published weights to Keras 3 .weights.h5"),
    "train": ("keras_densenet.apps.train", "train a DenseNet (default: the embedded digits)"),
}


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up logs quiet
    # channels_first convolutions on a CPU need oneDNN, on by default on Intel CPUs only
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
        usage = "usage: keras-densenet {%s} ...\n\n%s" % (",".join(COMMANDS), "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"keras-densenet: unknown command {argv[0]!r}\n\n{usage}", file=sys.stderr)
            return 2
        print(usage)
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
