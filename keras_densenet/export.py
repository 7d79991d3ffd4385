"""Export DenseNets for serving: TensorFlow SavedModel, ONNX, TFLite (LiteRT) and OpenVINO IR.

All four go through Keras' own ``model.export``. Options shared by all:

* ``preprocessing``: bake ``preprocess_input(mode=...)`` into the exported
  graph, so that it takes raw ``uint8`` RGB images (``(batch, H, W, 3)``, or
  ``(batch, 3, H, W)`` for channels_first models) instead of normalized floats;
* ``fuse``: fold BatchNormalizations into convolutions first
  (``keras_densenet.fusion``), an inference-only speed-up with equal outputs;
* ``overwrite``: an existing output is refused unless this is true; the
  output appears whole or not at all (written into a staging folder beside
  it, ``.NAME.XXXXXXXX``, then renamed); missing parent folders are created.

OpenVINO IR (``.xml`` + ``.bin``) can be quantized to int8 with NNCF
post-training quantization: ``quantize=`` a few hundred calibration images,
of which every ``HOLDOUT_EVERY``-th is held out to check the int8 model
against float32; one that agrees on fewer than ``min_agreement`` of them is
not written. Serve any export without Keras through ``keras_densenet.runtime``.

The serving input is named ``images`` (``INPUT_NAME``). Importing this module
loads no framework (Keras is imported by the functions that need it).
"""

import contextlib
import fcntl
import importlib.util
import os
import re
import shutil
import tempfile

import numpy as np

from keras_densenet.checks import check_number
from keras_densenet.preprocessing import MODES, preprocess_input
from keras_densenet.utils import move_into_place

FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "tflite": "litert",
           "openvino": "openvino"}
TENSORFLOW_ONLY = ("saved_model", "tflite")
INPUT_NAME = "images"
QUANTIZATION_PRESETS = ("performance", "mixed")
HOLDOUT_EVERY = 4
"""Every 4th calibration image is held out of calibration to check the int8 model."""
MIN_AGREEMENT = 0.995
"""The default least top-1 agreement of an int8 IR with float32 on the held-out images.

Top-1 accuracy changes only on images whose top-1 class changes, so on data
like the held-out images it moves by at most ``1 - agreement``: 0.995 keeps a
model's accuracy within 0.5 points there. The agreement is measured on a
sample: of 400 calibration images 100 are held out, and all of them must agree."""
QUANTIZATION_CHECK = {"top1_agreement": float, "max_abs_output_diff": float,
                      "held_out_images": int, "calibration_images": int}
"""What an int8 IR records of its check (``rt_info`` under ``RT_INFO_SECTION``), with types."""
RT_INFO_SECTION = "keras_densenet_int8_check"


def serving_model(model, preprocessing=None, fuse=False):
    """The model to export: optionally fused, optionally taking raw uint8 images.

    A model built with ``memory_efficient`` is served in the plain layout
    (``model.in_memory_mode``): same outputs, fewer ops, foldable BNs.

    Args:
        model: a functional DenseNet with a fixed or variable input size.
        preprocessing: ``None`` (inputs already preprocessed, float32) or a
            ``preprocess_input`` mode, ``"torch"`` or ``"caffe_bgr"``.
        fuse: fold BN layers into convs (``fusion.fold_batch_norms``).
    """
    import keras

    from keras_densenet.fusion import fold_batch_norms
    from keras_densenet.config import model_config
    from keras_densenet.memory_modes import memory_mode
    from keras_densenet.model import in_memory_mode

    if preprocessing is not None and preprocessing not in MODES:
        raise ValueError(f"preprocessing must be None or one of {MODES}; got {preprocessing!r}.")
    if memory_mode(model):
        # Recomputation only changes training: the plain layout serves faster and folds BNs.
        model = in_memory_mode(model, False) or model
    if fuse:
        model = fold_batch_norms(model)
    if preprocessing is None:
        return model
    data_format = model_config(model)["data_format"]
    raw = keras.Input(model.input.shape[1:], dtype="uint8", name=INPUT_NAME)
    normalized = keras.layers.Lambda(
        lambda x: preprocess_input(x, mode=preprocessing, data_format=data_format),
        name=f"preprocess_{preprocessing}")(raw)
    return keras.Model(raw, model(normalized), name=model.name)


def export(model, path, format="saved_model", preprocessing=None, fuse=False, quantize=None,
           quantization_preset="performance", min_agreement=MIN_AGREEMENT, overwrite=False,
           verbose=False):
    """Export ``model`` to ``path`` in ``format``; returns the path written.

    Args:
        model: a functional DenseNet.
        path: a SavedModel folder, or a ``.onnx``, ``.tflite`` or ``.xml`` file
            (OpenVINO also writes the weights next to it, ``.bin``).
        format: ``"saved_model"`` (default), ``"onnx"``, ``"tflite"`` or
            ``"openvino"``. SavedModel and TFLite need the TensorFlow backend;
            ONNX works from TensorFlow, JAX (with jax2onnx) and PyTorch; OpenVINO
            from TensorFlow and PyTorch (from JAX, Keras goes through jax2tf, whose
            XlaCallModule ops OpenVINO cannot convert: a one-line error says so).
        preprocessing, fuse: see ``serving_model``.
        quantize: OpenVINO only: calibration images for int8 NNCF
            post-training quantization, a few hundred of them: an array
            ``(n, *input_shape)`` or a ``tf.data.Dataset`` of such images
            (batched or not, optionally ``(images, labels)`` pairs). They are
            what the exported graph takes: raw ``uint8``-range images when
            ``preprocessing`` is given, preprocessed floats otherwise. At least
            ``HOLDOUT_EVERY`` of them: every ``HOLDOUT_EVERY``-th is held out
            of calibration and run through the float32 and int8 IRs; their
            top-1 agreement and largest absolute output difference are
            recorded in the IR (``quantization_check`` reads them).
        quantization_preset: NNCF's ``"performance"`` (symmetric, default) or
            ``"mixed"`` (asymmetric activations).
        min_agreement: with ``quantize``, the least top-1 agreement in [0, 1]
            (default ``MIN_AGREEMENT``, 0.995) on the held-out images; below it
            a ``ValueError`` is raised and nothing is written.
        overwrite: replace an existing output instead of refusing.
        verbose: let Keras print its export messages.

    Missing parent folders of ``path`` are created (``exported/densenet/1``).
    """
    import keras

    if format not in FORMATS:
        raise ValueError(f"format must be one of {tuple(FORMATS)}; got {format!r}.")
    backend = keras.backend.backend()
    if format in TENSORFLOW_ONLY and backend != "tensorflow":
        raise ValueError(
            f"Exporting to {format} needs the TensorFlow backend (this is {backend!r}). "
            "Use format='onnx' or 'openvino' here, or re-load the .keras model with "
            "KERAS_BACKEND=tensorflow and export there.")
    if format == "onnx" and backend == "jax" and importlib.util.find_spec("jax2onnx") is None:
        raise ImportError("ONNX export from the JAX backend needs jax2onnx (pip install "
                          "jax2onnx), or re-load the .keras model with KERAS_BACKEND=tensorflow "
                          "and export there.")
    if format == "openvino" and not str(path).endswith(".xml"):
        raise ValueError(f"An OpenVINO export path must end with .xml; got {path!r}.")
    if quantize is not None and format != "openvino":
        raise ValueError(f"quantize= needs format='openvino'; got format={format!r}.")
    if quantization_preset not in QUANTIZATION_PRESETS:
        raise ValueError(f"quantization_preset must be one of {QUANTIZATION_PRESETS}; "
                         f"got {quantization_preset!r}.")
    check_min_agreement("min_agreement", min_agreement)
    outputs = _output_files(path, format)
    existing = [output for output in outputs if os.path.exists(output)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]!r} already exists; pass overwrite to replace it.")
    dtype = "uint8" if preprocessing else "float32"
    input_shape = (None, *model.input.shape[1:])
    calibration = None if quantize is None else calibration_batches(quantize, input_shape, dtype)
    if calibration is not None and len(calibration) < HOLDOUT_EVERY:
        raise ValueError(f"quantize= needs at least {HOLDOUT_EVERY} calibration images (every "
                         f"{HOLDOUT_EVERY}th is held out to check the int8 model); "
                         f"got {len(calibration)}.")
    exported = serving_model(model, preprocessing, fuse)
    signature = [keras.InputSpec(shape=input_shape, dtype=dtype, name=INPUT_NAME)]

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with staging_folder(path) as staging:
        staged = [os.path.join(staging, os.path.basename(output)) for output in outputs]
        try:
            exported.export(staged[0], format=FORMATS[format], verbose=verbose,
                            input_signature=signature)
        except Exception as error:
            if backend == "jax" and format == "openvino" and "XlaCallModule" in str(error):
                raise ValueError(
                    "OpenVINO cannot convert this JAX version's export (jax2tf emits "
                    "XlaCallModule ops); re-load the .keras model with KERAS_BACKEND=tensorflow "
                    "or torch and export there.") from error
            raise
        if calibration is not None:
            _quantize_openvino(staged[0], calibration, quantization_preset, min_agreement)
        for source, output in sorted(zip(staged, outputs), key=lambda pair: pair[1].endswith(".xml")):
            move_into_place(source, output)  # .bin before .xml: the .xml never names a missing .bin
    return path


def check_min_agreement(argument, value):
    """``value`` as a float if it is a share in [0, 1], else a one-line ``ValueError``."""
    return check_number(argument, value, "[0, 1]", lambda share: 0 <= share <= 1)


def calibration_batches(images, input_shape, dtype):
    """Calibration images as a list of single-image arrays ``(1, *input_shape[1:])``.

    ``images``: an array ``(n, *input_shape[1:])`` or a ``tf.data.Dataset`` of
    images (batched or not; ``(images, labels, ...)`` elements use the images).
    Raises a one-line ``ValueError`` on a wrong shape or an empty set.
    """
    if hasattr(images, "as_numpy_iterator"):  # a tf.data.Dataset
        arrays = []
        for element in images.as_numpy_iterator():
            x = element[0] if isinstance(element, tuple) else element
            arrays.append(x if np.ndim(x) == len(input_shape) else x[None])
        images = np.concatenate(arrays) if arrays else np.zeros((0, *input_shape[1:]))
    images = np.asarray(images)
    expected = input_shape[1:]
    if images.ndim != len(input_shape) or any(
            size is not None and size != actual for size, actual in zip(expected, images.shape[1:])):
        wanted = "(n, " + ", ".join("any" if s is None else str(s) for s in expected) + ")"
        raise ValueError(f"quantize= calibration images must have shape {wanted}; "
                         f"got {images.shape}.")
    if len(images) == 0:
        raise ValueError("quantize= needs at least one calibration image; got none.")
    if dtype == "uint8":
        images = np.clip(np.round(images), 0, 255)
    return [batch[None] for batch in images.astype(dtype)]


def _quantize_openvino(xml_path, calibration, preset, min_agreement):
    """Replace the IR at ``xml_path`` by its NNCF int8 post-training quantization.

    ``calibration``: single-image batches; every ``HOLDOUT_EVERY``-th is held
    out, run through both IRs (float32 inference) and the result recorded in
    the int8 IR's ``rt_info`` (``QUANTIZATION_CHECK``). Raises a one-line
    ``ValueError``, replacing nothing, if the top-1 agreement is below
    ``min_agreement``.
    """
    import nncf
    import openvino
    import openvino.properties.hint as hints

    core = openvino.Core()
    model = core.read_model(xml_path)
    held_out = calibration[HOLDOUT_EVERY - 1::HOLDOUT_EVERY]
    used = [batch for index, batch in enumerate(calibration) if (index + 1) % HOLDOUT_EVERY]
    quantized = nncf.quantize(model, nncf.Dataset(used), preset=nncf.QuantizationPreset(preset),
                              subset_size=len(used))
    f32, int8 = (core.compile_model(graph, "CPU", {hints.inference_precision: openvino.Type.f32})
                 for graph in (model, quantized))
    expected = np.concatenate([f32(batch)[0] for batch in held_out])
    actual = np.concatenate([int8(batch)[0] for batch in held_out])
    agreement = float(np.mean(expected.argmax(-1) == actual.argmax(-1)))
    if agreement < min_agreement:
        raise ValueError(
            f"The int8 model agrees with float32 on the top-1 class of {agreement:.1%} of "
            f"{len(held_out)} held-out calibration images, below min_agreement={min_agreement}; "
            "nothing written (give more calibration images, try quantization_preset='mixed', "
            "or lower min_agreement).")
    check = {"top1_agreement": agreement,
             "max_abs_output_diff": float(np.abs(expected - actual).max()),
             "held_out_images": len(held_out), "calibration_images": len(used)}
    for key, value in check.items():
        quantized.set_rt_info(value, [RT_INFO_SECTION, key])
    staged = xml_path[:-len(".xml")] + ".int8.xml"  # the .bin being read stays untouched
    openvino.save_model(quantized, staged, compress_to_fp16=False)
    del model, quantized, f32, int8
    os.replace(staged[:-len(".xml")] + ".bin", xml_path[:-len(".xml")] + ".bin")
    os.replace(staged, xml_path)


def quantization_check(xml_path):
    """What ``export`` measured of the int8 IR at ``xml_path`` on its held-out calibration
    images: a dict of ``QUANTIZATION_CHECK``'s keys, or ``None`` for an IR without one."""
    import openvino

    model = openvino.Core().read_model(xml_path)
    if not model.has_rt_info([RT_INFO_SECTION, "top1_agreement"]):
        return None
    return {key: model.get_rt_info([RT_INFO_SECTION, key]).astype(kind)
            for key, kind in QUANTIZATION_CHECK.items()}


@contextlib.contextmanager
def staging_folder(path):
    """Yield a new hidden folder beside ``path`` (``.NAME.XXXXXXXX``) to write an export
    into; it is removed afterwards.

    The export holds an exclusive ``flock`` on the folder while it runs, which the
    system releases when a process dies, so a folder of that pattern that nothing
    holds was left by a killed export: those of the same NAME are removed first
    (nothing else is touched, a running export's folder included).
    """
    folder, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}")  # tempfile.mkdtemp's names
    for entry in os.listdir(folder):
        leftover = os.path.join(folder, entry)
        if pattern.fullmatch(entry) and os.path.isdir(leftover) and not os.path.islink(leftover):
            with _locked(leftover) as unused:
                if unused:
                    shutil.rmtree(leftover)
    while True:
        staging = tempfile.mkdtemp(dir=folder, prefix=f".{name}.")
        with _locked(staging) as ours:
            if ours and os.path.isdir(staging):  # else another export's clean-up just took it
                try:
                    yield staging
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
                return


@contextlib.contextmanager
def _locked(folder):
    """Yield whether this process got the exclusive ``flock`` of ``folder`` (held for the block)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
    except BlockingIOError:
        locked = False
    try:
        yield locked
    finally:
        os.close(descriptor)


def _output_files(path, format):
    """The files (or folder) an export writes, the main one first."""
    path = str(path)
    if format == "openvino":
        return [path, path[:-len(".xml")] + ".bin"]
    return [path]
