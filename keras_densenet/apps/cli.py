"""The ``keras-densenet`` command: one subcommand per module.

Each subcommand lives in its own module, which imports no framework at module
level and provides:

* ``build_parser()``: its ``argparse`` parser (``keras-densenet CMD --help``);
* ``run(args)``: the command on the parsed arguments, returning the exit code
  (its ``main(argv)`` is ``run(build_parser().parse_args(argv))``);
* ``USES_FRAMEWORK = False``, if it never imports Keras (optional);
* ``interrupted(args)``: the line to print on Ctrl-C (optional; default
  ``interrupted``).

So ``--help``, ``--version`` and usage errors never start the framework.
Errors are one line on stderr (``keras-densenet CMD: error: MESSAGE``, exit
code 2); ``--debug`` (before the subcommand) or ``KERAS_DENSENET_DEBUG=1``
shows the full traceback instead. Ctrl-C prints one line and exits with 130.
TensorFlow's C++ start-up lines are silenced (``start_framework``).
"""

import importlib
import os
import sys

COMMANDS = {
    # subcommand: (module, one-line help)
    "train": ("keras_densenet.apps.train", "train a DenseNet (default: the embedded digits)"),
    "classify": ("keras_densenet.apps.classify",
                 "top classes of images, with a trained .keras model or ImageNet weights"),
    "export": ("keras_densenet.apps.export",
               "export a .keras model: SavedModel, ONNX, TFLite, OpenVINO (f32 or int8)"),
    "port": ("keras_densenet.apps.port", "convert published weights to Keras 3 .weights.h5"),
    "summary": ("keras_densenet.apps.summary", "parameter counts of every preset"),
    "benchmark": ("keras_densenet.apps.benchmark",
                  "images/s and latency on every runtime and precision, beside keras.applications"),
    "validate": ("keras_densenet.apps.validate",
                 "top-1/top-5 on a labelled folder, per runtime, with agreement against Keras"),
}
DEBUG_VARIABLE = "KERAS_DENSENET_DEBUG"
"""Set to 1 to see full tracebacks instead of one-line errors."""
FRAMEWORK_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ", "W0000 ")
"""Start-up lines that TensorFlow's C++ runtime writes before its log level applies."""
INTERRUPTED_EXIT_CODE = 130
"""The shell's code for a process ended by SIGINT (128 + 2)."""


def usage():
    lines = [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return ("usage: keras-densenet [--version] [--debug] {%s} ...\n\n%s\n\n"
            "keras-densenet COMMAND --help shows a command's options; --debug (or %s=1) "
            "shows full tracebacks." % (",".join(COMMANDS), "\n".join(lines), DEBUG_VARIABLE))


def main(argv=None):
    """Run ``keras-densenet ARGV``; returns the exit code (0 ok, 1 some inputs failed,
    2 error, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    while argv and argv[0] in ("--debug", "--version"):
        if argv.pop(0) == "--version":
            from keras_densenet import __version__

            print(f"keras-densenet {__version__}")
            return 0
        debug = True
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, argv = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"keras-densenet: error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = args = None
    try:
        module = importlib.import_module(COMMANDS[command][0])
        args = module.build_parser().parse_args(argv)  # --help and usage errors exit here
        if getattr(module, "USES_FRAMEWORK", True):
            start_framework()  # its start-up, silenced, before any work
        return module.run(args)
    except KeyboardInterrupt:
        return _interrupted(command, module, args)
    except SystemExit:
        raise
    except Exception as error:  # the subcommand's own errors, reported as one line
        if _caused_by_ctrl_c(error):  # e.g. a tf.data or callback error raised on Ctrl-C
            return _interrupted(command, module, args)
        if debug:
            raise
        message = " ".join(str(error).split()) or error.__class__.__name__
        print(f"keras-densenet {command}: error: {message} (--debug shows the traceback)",
              file=sys.stderr)
        return 2


def _interrupted(command, module, args):
    """Print the command's one line for Ctrl-C; the exit code 130."""
    describe = getattr(module, "interrupted", None)
    line = describe(args) if describe and args is not None else "interrupted"
    print(f"keras-densenet {command}: {line}", file=sys.stderr)
    return INTERRUPTED_EXIT_CODE


def _caused_by_ctrl_c(error):
    """Whether a ``KeyboardInterrupt`` is in ``error``'s chain of causes and contexts."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__cause__ or error.__context__
    return False


def start_framework():
    """Import Keras (and its backend) with TensorFlow's start-up log silenced; returns ``keras``.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` and ``TF_ENABLE_ONEDNN_OPTS=1`` (channels_first
    convolutions on a CPU need oneDNN, which TensorFlow enables on Intel CPUs
    only) unless they are set, then imports through ``import_quietly``. The
    examples call it before their other imports.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    return import_quietly("keras")


def import_quietly(name):
    """Import module ``name`` with the C++ runtime's start-up lines filtered out of stderr.

    TensorFlow's stub loader logs "Could not find cuda drivers" through absl
    before ``TF_CPP_MIN_LOG_LEVEL`` applies, straight to file descriptor 2; the
    descriptor is redirected to a file during the import and every line but
    ``FRAMEWORK_NOISE`` is written back.
    """
    if name in sys.modules:
        return sys.modules[name]
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return importlib.import_module(name)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith(FRAMEWORK_NOISE):
                    sys.stderr.write(line)


if __name__ == "__main__":
    sys.exit(main())
