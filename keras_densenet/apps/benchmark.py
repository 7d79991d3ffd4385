"""``keras-densenet benchmark``: images/s and latency of a DenseNet on every runtime here.

    keras-densenet benchmark densenet121 --batch-sizes 1 32 --seconds 5
    keras-densenet benchmark runs/digits/model.keras --runtimes keras openvino-int8 --csv speed.csv
    keras-densenet benchmark exported/densenet121.xml --reference densenet121

MODEL is a ``.keras`` file, a preset name (``densenet121``, ...: built with
random weights at ``--image-size``, default 224) or an export (``.onnx``,
OpenVINO ``.xml``). Runtimes (``--runtimes``, default all):

* ``keras``: the model on the active Keras backend (``predict_on_batch``);
* ``onnx``: onnxruntime; ``openvino-f32``, ``openvino-bf16``,
  ``openvino-int8``: OpenVINO at that precision (``keras_densenet.runtime``,
  its default hint). A Keras model is exported for each into a temporary
  folder (BN folded); int8 is quantized with ``--calibration-size`` random
  images: a speed check (``keras-densenet validate`` measures accuracy).

At each batch size every runtime makes ``--warmup`` calls (compilation,
tracing) not timed, then timed calls on random images, interleaved (one call
of each in turn, so that a change of load slows them alike), until
``--seconds`` per runtime or ``--iterations`` calls each, whichever comes
first. images/s is the images of the timed calls over their total time;
p50/p90/p99 the percentiles of one call's latency.

Streams: at batch size 1, each exported runtime also takes its turns with a
stream of ``--stream`` single images (default 32; 0: none) through
``Predictor.predict_stream`` (OpenVINO: pipelined, several images in flight;
onnxruntime: one after the other), mode ``stream``: images/s over the
streams' time, p50/p90/p99 of one image's latency (from the stream taking it
to its scores), ``iterations`` the timed streams, and ``of_largest_batch``, its images/s over the same
runtime's at the largest of ``--batch-sizes`` (stream rows come last, once
that is measured).

The reference is keras.applications' DenseNet of the same architecture
(``weights=None``, same input size and output width), called each of
``reference_calls``' ways (``predict``, ``predict_on_batch``, and on
TensorFlow a ``tf.function``) beside the others; ``ratio`` is a runtime's
images/s over the fastest of those at the same batch size. It applies to
models that record a published architecture (121, 169, 201); ``--reference
ARCH`` names it for an export (1000 classes), ``--reference none`` leaves it
out.

A runtime that is not installed, that this CPU or backend cannot run, or
that does not fit MODEL (``keras`` for an export, ``onnx`` for an ``.xml``)
is listed as skipped, with the reason. The table names the CPU (model name,
the flags that matter: avx2, avx512f, avx512_vnni, avx512_bf16, amx), what
OpenVINO reports it can compute in, and the load average before and after
each batch size: on a shared machine, read the numbers with it. ``--csv FILE``
writes the rows (atomically; an existing FILE only with ``--overwrite``).
"""

import argparse
import csv
import importlib.util
import os
import platform
import time

from keras_densenet.apps.export import MODEL_EXTENSIONS
from keras_densenet.architectures import IMAGENET_VARIANTS
from keras_densenet.checks import check_choice, check_number, check_positive_int
from keras_densenet.utils import atomic_path, check_input_path, check_output_path

SERVING_RUNTIMES = {
    # runtime: (the export it runs, precision, packages it needs)
    "onnx": ("model.onnx", "f32", ("onnxruntime",)),
    "openvino-f32": ("model.xml", "f32", ("openvino",)),
    "openvino-bf16": ("model.xml", "bf16", ("openvino",)),
    "openvino-int8": ("model_int8.xml", "int8", ("openvino", "nncf")),
}
"""The runtimes of ``keras_densenet.runtime``, run on an export of a Keras model."""
RUNTIMES = ("keras", *SERVING_RUNTIMES)
REFERENCES = {"densenet121": "DenseNet121", "densenet169": "DenseNet169",
              "densenet201": "DenseNet201"}
"""Published architectures -> the keras.applications builder of the same network."""
EXPORT_FILES = {".onnx": "onnx", ".xml": "openvino"}
DEFAULT_SIZE = 224
SETTLE_S = 0.02
"""Pause after each timed call while runtimes take turns: their worker threads (onnxruntime's,
OpenVINO's TBB, TensorFlow's Eigen) spin a while after a call, which on a CPU with few cores
would slow the next runtime's call."""
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
"""The CPU flags (``/proc/cpuinfo``, as lscpu shows them) that decide what runs fast."""
COLUMNS = ("model", "runtime", "mode", "precision", "batch_size", "image_size", "images_per_s",
           "p50_ms", "p90_ms", "p99_ms", "iterations", "ratio", "of_largest_batch", "load_before",
           "load_after", "status", "reason", "backend", "cpu", "cores", "cpu_flags",
           "openvino_capabilities")
"""The CSV's columns; a skipped runtime fills model, runtime, precision, status and reason.
``mode``: ``call`` (one call per batch) or ``stream``."""


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-densenet benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .keras file, a preset (densenet121, ...: random "
                                      "weights) or an export (.onnx, .xml)")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), metavar="RUNTIME",
                        help=f"any of {', '.join(RUNTIMES)} (default: all)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32], metavar="N",
                        help="default: 1 32")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="timed seconds per runtime and batch size, at most (default 5)")
    parser.add_argument("--iterations", type=int, default=100,
                        help="timed calls per runtime and batch size, at most (default 100)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls first (compilation, tracing; default 2)")
    parser.add_argument("--image-size", type=int,
                        help=f"input size of a preset or of a model that takes any size "
                             f"(default: the model's, else {DEFAULT_SIZE})")
    parser.add_argument("--reference", default="auto",
                        help="the keras.applications model to compare with: auto (the "
                             "architecture the model records), none, or one of "
                             f"{', '.join(REFERENCES)} (default: auto)")
    parser.add_argument("--stream", type=int, default=32, metavar="N",
                        help="single images per timed stream at batch size 1 (default 32; 0: "
                             "no streams)")
    parser.add_argument("--calibration-size", type=int, default=32,
                        help="random calibration images for openvino-int8 (default 32)")
    parser.add_argument("--csv", metavar="FILE", help="also write the rows to FILE")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --csv FILE")
    return parser


def main(argv=None):
    return run(build_parser().parse_args(argv))


def run(args):
    runtimes = [check_choice("--runtimes", name, RUNTIMES) for name in
                dict.fromkeys(args.runtimes)]
    batch_sizes = [check_positive_int("--batch-sizes", size) for size in args.batch_sizes]
    check_number("--seconds", args.seconds, "(0, inf)", lambda value: value > 0)
    for flag in ("iterations", "warmup", "calibration_size", "image_size"):
        if getattr(args, flag) is not None:
            check_positive_int("--" + flag.replace("_", "-"), getattr(args, flag))
    check_choice("--reference", args.reference, ("auto", "none", *REFERENCES))
    if isinstance(args.stream, bool) or not isinstance(args.stream, int) or args.stream < 0:
        raise ValueError(f"--stream must be a positive integer (or 0: no streams); got "
                         f"{args.stream!r}.")
    kind = model_kind(args.model)
    if args.csv:
        check_output_path(args.csv, args.overwrite, inputs=[args.model], argument="--csv")

    machine = machine_description()
    print(f"CPU: {machine['cpu']} ({machine['cores']} cores); flags: "
          f"{machine['cpu_flags'] or 'none of ' + ' '.join(CPU_FLAGS)}"
          f"{'' if 'amx' in machine['cpu_flags'] else ' (no AMX)'}; OpenVINO computes in: "
          f"{machine['openvino_capabilities']}; Keras backend: {machine['backend']}", flush=True)
    print(format_row(None), flush=True)
    rows = []
    for row in benchmark(args.model, kind, runtimes, batch_sizes, args.image_size,
                         args.reference, args.seconds, args.iterations, args.warmup,
                         args.calibration_size, args.stream):
        rows.append({**row, **machine})
        print(format_row(row), flush=True)
    if args.csv:
        write_csv(args.csv, rows, args.overwrite)
        print(f"wrote {args.csv}")
    return 0


def model_kind(name):
    """``"keras"`` (a ``.keras``/``.h5`` file), ``"preset"`` or an export's runtime
    (``"onnx"``, ``"openvino"``); a one-line error for anything else or a missing file."""
    extension = os.path.splitext(name)[1]
    if extension in MODEL_EXTENSIONS or extension in EXPORT_FILES:
        check_input_path(name, "model")
        return EXPORT_FILES.get(extension, "keras")
    if name in IMAGENET_VARIANTS:
        return "preset"
    raise ValueError(f"model must be a {'/'.join(MODEL_EXTENSIONS)} file, an export "
                     f"({', '.join(EXPORT_FILES)}) or a preset "
                     f"({', '.join(IMAGENET_VARIANTS)}); got {name!r}.")


def benchmark(name, kind, runtimes, batch_sizes, image_size=None, reference="auto", seconds=5.0,
              iterations=100, warmup=2, calibration_size=32, stream=32):
    """Yield one row (a dict of ``COLUMNS`` but the machine's) per skipped runtime, then
    per batch size the reference's and each runtime's, measured together (``measure``),
    then the streams' (measured with batch size 1).

    ``name``, ``kind``: MODEL and its ``model_kind``; the rest as the command's
    options (``reference``: ``"auto"``, ``"none"`` or a key of ``REFERENCES``;
    ``stream``: images per timed stream, 0 for none).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        if kind in ("keras", "preset"):
            target = _keras_target(name, kind, runtimes, image_size, calibration_size, folder)
        else:
            target = _export_target(name, kind, runtimes, image_size)
        predictors, skipped, shape, data_format, published, outputs = target
        references = []
        architecture = published if reference == "auto" else reference
        if architecture in REFERENCES and shape is not None and data_format == "channels_last":
            model = _reference_model(architecture, shape, outputs)
            calls = {f"keras.applications.{REFERENCES[architecture]} {how}": (call, "float32", None)
                     for how, call in reference_calls(model).items()}
            references = list(calls)
            predictors = {**calls, **predictors}
        elif reference != "none":
            skipped["keras.applications"] = (
                f"MODEL records no architecture of keras.applications; --reference "
                f"{'/'.join(REFERENCES)} names one" if architecture not in REFERENCES else
                "no runtime to compare with ran" if shape is None else
                "keras.applications is compared channels_last only")
        label = os.path.basename(name)
        for runtime, reason in skipped.items():
            yield dict(model=label, runtime=runtime, precision=runtime_precision(runtime),
                       status="skipped", reason=reason)
        size = shape and shape[1 if data_format == "channels_first" else 0]
        largest = max(batch_sizes)
        rates, streams = {}, []  # runtime: images/s at the largest batch size; stream rows
        for batch_size in batch_sizes:
            runs = {(runtime, "call"): (predict, random_images((batch_size, *shape), dtype))
                    for runtime, (predict, dtype, _) in predictors.items()}
            if batch_size == 1 and stream:
                runs.update(((runtime, "stream"), (Stream(predict_stream),
                                                   random_images((stream, *shape), dtype)))
                            for runtime, (_, dtype, predict_stream) in predictors.items()
                            if predict_stream)
            before = _load_average()
            measured = measure(runs, warmup, seconds, iterations)
            after = _load_average()
            fastest = max((measured[name, "call"]["images_per_s"] for name in references),
                          default=None)
            for (runtime, mode), timing in measured.items():
                row = dict(model=label, runtime=runtime, mode=mode,
                           precision=runtime_precision(runtime), batch_size=batch_size,
                           image_size=size, **timing,
                           ratio=None if fastest is None else timing["images_per_s"] / fastest,
                           load_before=before, load_after=after, status="ok", reason="")
                if batch_size == largest:
                    rates[runtime] = timing["images_per_s"]
                if mode == "stream":
                    streams.append(row)
                else:
                    yield row
        for row in streams:
            yield {**row, "of_largest_batch": row["images_per_s"] / rates[row["runtime"]]
                   if largest > 1 else None}


def _keras_target(name, kind, runtimes, image_size, calibration_size, folder):
    """What ``benchmark`` runs for a Keras model or a preset: ``({runtime: (predict, input
    dtype, predict_stream or None)}, {runtime: why skipped}, input shape (no batch),
    data_format, published architecture or None, output shape (no batch))``."""
    from keras_densenet.config import model_config

    model = _keras_model(name, kind, image_size)
    config = model_config(model)
    shape = _input_shape(model.input.shape[1:], config["data_format"], image_size)
    calibration = (random_images((calibration_size, *shape), "float32")
                   if "openvino-int8" in runtimes else None)
    exported, skipped = exported_predictors(model, runtimes, folder, calibration=calibration)
    predictors = ({"keras": (model.predict_on_batch, "float32", None)} if "keras" in runtimes
                  else {})
    predictors.update((runtime, (predictor.predict, predictor.input_dtype,
                                 predictor.predict_stream))
                      for runtime, predictor in exported.items())
    return (predictors, skipped, shape, config["data_format"], config.get("published_name"),
            tuple(model.output.shape[1:]))


def _export_target(path, kind, runtimes, image_size):
    """``_keras_target``'s answer for an exported file (no published architecture; 1000
    outputs are assumed for a reference named by ``--reference``)."""
    predictors, skipped = {}, {}
    for runtime in runtimes:
        reason = (f"{path} is an export; keras runs a .keras model or a preset"
                  if runtime == "keras" else
                  f"{path} is an {kind} export: it runs under {kind} only"
                  if not runtime.startswith(kind) else _missing_packages(runtime))
        if not reason:
            try:
                predictor = _load(path, SERVING_RUNTIMES[runtime][1])
            except (ImportError, ValueError) as error:
                reason = _one_line(error)
        if reason:
            skipped[runtime] = reason
            continue
        predictors[runtime] = (predictor.predict, predictor.input_dtype, predictor.predict_stream)
        shape = predictor.input_shape[1:]
    if not predictors:
        return predictors, skipped, None, "channels_last", None, (1000,)
    data_format = "channels_first" if shape[0] == 3 and shape[-1] != 3 else "channels_last"
    return (predictors, skipped, _input_shape(shape, data_format, image_size), data_format,
            None, (1000,))


def exported_predictors(model, runtimes, folder, preprocessing=None, calibration=None):
    """Run ``model`` under each serving runtime of ``runtimes`` (the others are ignored).

    ``model`` is exported (BN folded) into ``folder`` once per file of
    ``SERVING_RUNTIMES`` (``preprocessing`` baked in if given, see
    ``keras_densenet.export``); ``openvino-int8`` is quantized with
    ``calibration`` images (``(n, *input_shape)``, as the export takes them).
    Returns ``({runtime: keras_densenet.runtime.Predictor}, {runtime: why it
    was skipped})``: a package not installed, an export this backend cannot
    make, a precision this CPU lacks, no calibration images for int8.
    """
    from keras_densenet.export import export

    predictors, skipped, failed = {}, {}, {}
    for runtime in runtimes:
        if runtime not in SERVING_RUNTIMES:
            continue
        file, precision, _ = SERVING_RUNTIMES[runtime]
        reason = _missing_packages(runtime) or failed.get(file) or (
            "needs calibration images" if precision == "int8" and calibration is None else None)
        if reason:
            skipped[runtime] = reason
            continue
        path = os.path.join(folder, file)
        try:
            if not os.path.exists(path):
                export(model, path, "onnx" if file.endswith(".onnx") else "openvino",
                       preprocessing=preprocessing, fuse=True,
                       quantize=calibration if precision == "int8" else None,
                       min_agreement=0)  # validate measures int8's agreement itself
        except (ImportError, ValueError) as error:
            failed[file] = skipped[runtime] = _one_line(error)
            continue
        try:
            predictors[runtime] = _load(path, precision)
        except (ImportError, ValueError) as error:
            skipped[runtime] = _one_line(error)
    return predictors, skipped


def measure(runs, warmup=2, seconds=5.0, iterations=100):
    """Time ``predict(images)`` for each ``name: (predict, images)`` of ``runs``, interleaved.

    ``warmup`` untimed calls of each, then rounds of one timed call of each
    (``SETTLE_S`` apart) until ``seconds`` per run have passed in all or
    ``iterations`` rounds were made (at least one): a load that changes
    meanwhile slows every run alike. A ``Stream`` is timed as one call per
    stream of ``images``.
    Returns ``{name: {images_per_s, p50_ms, p90_ms, p99_ms, iterations}}``:
    the images of the timed calls over their total time, and the percentiles
    of one call's latency (of a ``Stream``: of one image's).
    """
    import numpy as np

    for predict, images in runs.values():
        for _ in range(warmup):
            predict(images)
    times = {name: [] for name in runs}
    latencies = {name: [] for name in runs}
    deadline = time.perf_counter() + seconds * len(runs)
    for _ in range(iterations):
        for name, (predict, images) in runs.items():
            start = time.perf_counter()
            images_latencies = predict(images)
            times[name].append(time.perf_counter() - start)
            latencies[name].extend(images_latencies if isinstance(predict, Stream)
                                   else times[name][-1:])
            if len(runs) > 1:
                time.sleep(SETTLE_S)
        if time.perf_counter() >= deadline:
            break
    measured = {}
    for name, (_, images) in runs.items():
        p50, p90, p99 = np.percentile(latencies[name], [50, 90, 99]) * 1000
        measured[name] = dict(images_per_s=len(images) * len(times[name]) / sum(times[name]),
                              p50_ms=p50, p90_ms=p90, p99_ms=p99, iterations=len(times[name]))
    return measured


class Stream:
    """A run of ``measure`` that feeds ``images`` one at a time to ``predict_stream``
    (``Predictor.predict_stream``); a call returns each image's latency in seconds, from the
    stream taking it to its scores being yielded."""

    def __init__(self, predict_stream):
        self.predict_stream = predict_stream

    def __call__(self, images):
        taken = []

        def feed():
            for image in images:
                taken.append(time.perf_counter())
                yield image

        return [time.perf_counter() - taken[index]
                for index, _ in enumerate(self.predict_stream(feed()))]


def reference_calls(model):
    """``{how: call}``: the ways of running a keras.applications ``model`` on a batch whose
    fastest is the reference (``benchmark``, ``benchmarks/inference.py``): ``predict``,
    ``predict_on_batch`` and, on the TensorFlow backend, a ``tf.function`` of the call
    (inference mode); each returns the outputs."""
    calls = {"predict": lambda images: model.predict(images, verbose=0),
             "predict_on_batch": model.predict_on_batch}
    if _backend() == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(lambda images: model(images, training=False))
        calls["tf.function"] = compiled
    return calls


def random_images(shape, dtype):
    """Images of ``shape`` (batch first), the same for every runtime: uint8 pixels for an
    export that takes raw images, standard-normal floats (preprocessed-like) otherwise."""
    import numpy as np

    rng = np.random.default_rng(0)
    if dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype="uint8")
    return rng.standard_normal(shape, dtype="float32")


def runtime_precision(runtime):
    """The precision ``runtime`` computes in (``keras`` and the reference: ``"f32"``)."""
    return SERVING_RUNTIMES[runtime][1] if runtime in SERVING_RUNTIMES else "f32"


def machine_description():
    """``backend``, ``cpu`` (model name), ``cores``, ``cpu_flags`` (those of ``CPU_FLAGS`` it
    has, space-separated) and ``openvino_capabilities`` (``runtime.capabilities``, joined)."""
    cpu, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name":
                    cpu = value
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:  # not Linux: the flags are unknown
        pass
    if importlib.util.find_spec("openvino") is None:
        openvino = "openvino not installed"
    else:
        from keras_densenet.runtime import capabilities

        openvino = " ".join(capabilities())
    return dict(backend=_backend(), cpu=cpu, cores=os.cpu_count(),
                cpu_flags=" ".join(flag for flag in CPU_FLAGS if flag in flags),
                openvino_capabilities=openvino)


def format_row(row):
    """One line of the table: the header for ``None``; a skipped runtime with its reason."""
    if row is None:
        return (f"{'batch':>5}  {'runtime':<48} {'precision':<9} {'images/s':>9} {'p50 ms':>8} "
                f"{'p90 ms':>8} {'p99 ms':>8} {'calls':>5} {'ratio':>6}  load before/after")
    if row["status"] == "skipped":
        return f"{'-':>5}  {row['runtime']:<48} {row['precision']:<9} skipped: {row['reason']}"
    ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}x"
    runtime = row["runtime"] + (" stream" if row["mode"] == "stream" else "")
    fraction = ("" if row.get("of_largest_batch") is None else
                f"  = {row['of_largest_batch']:.2f} of the largest batch's images/s")
    return (f"{row['batch_size']:>5}  {runtime:<48} {row['precision']:<9} "
            f"{row['images_per_s']:>9.1f} {row['p50_ms']:>8.1f} {row['p90_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {row['iterations']:>5} {ratio:>6}  "
            f"{row['load_before']:.2f}/{row['load_after']:.2f}{fraction}")


def write_csv(path, rows, overwrite=False):
    """Write ``rows`` under ``COLUMNS`` to ``path`` atomically (floats rounded to 4 decimals);
    an existing ``path`` only with ``overwrite``."""
    with atomic_path(path, overwrite) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({key: round(value, 4) if isinstance(value, float) else value
                              for key, value in row.items()} for row in rows)


def _keras_model(name, kind, image_size):
    from keras_densenet.apps.classify import load_model
    from keras_densenet.presets import DenseNetImageNet

    if kind == "keras":
        return load_model(name)

    size = image_size or DEFAULT_SIZE
    return DenseNetImageNet(name, weights=None, input_shape=(size, size, 3))


def _input_shape(shape, data_format, image_size):
    """``shape`` (no batch) with free image sizes set to ``image_size`` (default 224); a
    one-line error if ``image_size`` contradicts a fixed size."""
    spatial = (1, 2) if data_format == "channels_first" else (0, 1)
    fixed = {shape[axis] for axis in spatial} - {None}
    if image_size is not None and fixed and fixed != {image_size}:
        raise ValueError(f"--image-size {image_size}: this model takes {tuple(shape)} images "
                         "only; leave --image-size out.")
    return tuple(int(size) if size is not None else image_size or DEFAULT_SIZE
                 for size in shape)


def _reference_model(architecture, shape, outputs):
    """keras.applications' ``architecture`` with random weights, input ``shape``, a
    classifier as wide as ``outputs`` (no top for feature maps)."""
    import keras

    build = getattr(keras.applications, REFERENCES[architecture])
    if len(outputs) == 1:
        return build(weights=None, input_shape=shape, classes=int(outputs[0]))
    return build(weights=None, input_shape=shape, include_top=False)


def _load(path, precision):
    from keras_densenet import runtime

    return runtime.load(path, precision)


def _missing_packages(runtime):
    """Why ``runtime`` cannot run (its packages not installed), or ``None``."""
    missing = [name for name in SERVING_RUNTIMES[runtime][2]
               if importlib.util.find_spec(name) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


def _backend():
    import keras

    return keras.backend.backend()


def _load_average():
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def _one_line(error):
    return " ".join(str(error).split()) or error.__class__.__name__


if __name__ == "__main__":
    raise SystemExit(main())
