"""Predictions from an exported DenseNet without Keras: ONNX (onnxruntime) or OpenVINO IR.

    from keras_densenet.runtime import load
    predictor = load("densenet.xml", precision="bf16")   # or "densenet.onnx"
    scores = predictor.predict(images)                    # (batch, classes) numpy array

This module needs only numpy and the runtime of the file it loads
(``onnxruntime`` for ``.onnx``, ``openvino`` for ``.xml``), imported when a
file is loaded; it never imports Keras or TensorFlow, so a service can use it
alone. Files come from ``keras_densenet.export.export`` (input ``images``;
``uint8`` when preprocessing is baked in).

Precisions (``PRECISIONS``):

* ``"f32"``: float32 everywhere (onnxruntime, OpenVINO).
* ``"bf16"``: OpenVINO computes in bfloat16 (``INFERENCE_PRECISION_HINT``);
  only on CPUs that report ``BF16`` in OpenVINO's
  ``OPTIMIZATION_CAPABILITIES`` (AVX512-BF16 or AMX: recent Xeons); elsewhere
  ``load`` raises a ``ValueError`` rather than emulating it slowly.
* ``"int8"``: an IR quantized at export time
  (``export(..., format="openvino", quantize=images)``); the layers left in
  float run in float32.

``precision=None`` takes what the file is: ``"int8"`` for a quantized IR,
``"f32"`` otherwise.
"""

import math

import numpy as np

PRECISIONS = ("f32", "bf16", "int8")
HINTS = ("throughput", "latency")
RUNTIMES = {".onnx": "onnx", ".xml": "openvino"}


def load(path, precision=None, hint="throughput", device="CPU"):
    """A ``Predictor`` for the exported file ``path`` (``.onnx`` or OpenVINO ``.xml``).

    Args:
        path: an ONNX file (run by onnxruntime, ``"f32"`` only) or an
            OpenVINO IR ``.xml`` (its ``.bin`` next to it).
        precision: ``None`` (what the file is), ``"f32"``, ``"bf16"`` or
            ``"int8"`` (see the module doc).
        hint: OpenVINO's performance hint: ``"throughput"`` (default: several
            streams; a batch is split over asynchronous requests) or
            ``"latency"`` (one request uses every core).
        device: OpenVINO device name (default ``"CPU"``).

    Raises ``ValueError`` (one line) for an unknown runtime, precision or hint,
    bf16 on a CPU without it, or a precision the file cannot run in.
    """
    path = str(path)
    runtime = next((name for suffix, name in RUNTIMES.items() if path.endswith(suffix)), None)
    if runtime is None:
        raise ValueError(f"path must be an exported .onnx or OpenVINO .xml file; got {path!r}.")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be None or one of {PRECISIONS}; got {precision!r}.")
    if hint not in HINTS:
        raise ValueError(f"hint must be one of {HINTS}; got {hint!r}.")
    if runtime == "onnx":
        return ONNXPredictor(path, precision)
    return OpenVINOPredictor(path, precision, hint, device)


class Predictor:
    """Runs an exported model: ``predict(images) -> (batch, classes)`` numpy array.

    Attributes:
        path, runtime (``"onnx"``/``"openvino"``), precision (``PRECISIONS``),
        input_shape (with ``None`` for free sizes, batch first) and
        input_dtype (``"uint8"`` when preprocessing is baked in, else ``"float32"``).
    """

    runtime = None

    def predict(self, images):
        """Model outputs for ``images`` (``(batch, *input_shape[1:])``), float32."""
        images = np.asarray(images)
        self._check(images)
        return self._run(images.astype(self.input_dtype, copy=False))

    def _check(self, images):
        shape = self.input_shape[1:]
        if images.ndim != len(self.input_shape) or any(
                size is not None and size != actual for size, actual in zip(shape, images.shape[1:])):
            wanted = "(batch, " + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"images must have shape {wanted} for {self.path}; got {images.shape}.")
        if self.input_dtype == "uint8" and not np.issubdtype(images.dtype, np.integer):
            raise ValueError(f"{self.path} takes uint8 images (preprocessing is baked in); "
                             f"got {images.dtype}.")

    def __repr__(self):
        return (f"{type(self).__name__}({self.path!r}, precision={self.precision!r}, "
                f"input {self.input_shape} {self.input_dtype})")


class ONNXPredictor(Predictor):
    """An ONNX file under onnxruntime (float32 only)."""

    runtime = "onnx"

    def __init__(self, path, precision=None):
        if precision not in (None, "f32"):
            raise ValueError(f"The onnx runtime runs f32 only; got precision={precision!r} "
                             "(bf16 and int8 run through an OpenVINO .xml export).")
        import onnxruntime

        self.path, self.precision = path, "f32"
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        (model_input,) = self.session.get_inputs()
        self.input_name = model_input.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in model_input.shape)
        self.input_dtype = "uint8" if model_input.type == "tensor(uint8)" else "float32"

    def _run(self, images):
        return self.session.run(None, {self.input_name: images})[0]


class OpenVINOPredictor(Predictor):
    """An OpenVINO IR compiled with a performance hint and an inference precision."""

    runtime = "openvino"

    def __init__(self, path, precision=None, hint="throughput", device="CPU"):
        import openvino
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = openvino.Core()
        model = core.read_model(path)
        quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        precision = precision or ("int8" if quantized else "f32")
        if precision == "int8" and not quantized:
            raise ValueError(f"{path} is not quantized; export it with quantize=calibration "
                             "images (keras-densenet export --format openvino --calibration DIR).")
        if precision != "int8" and quantized:
            raise ValueError(f"{path} is int8-quantized; use precision='int8' (or None).")
        if precision == "bf16" and not supports_bf16(device, core):
            raise ValueError(
                f"precision='bf16' needs a {device} with bfloat16 support (OpenVINO's "
                f"OPTIMIZATION_CAPABILITIES reports {capabilities(device, core)}); use 'f32' or "
                "'int8' here.")
        config = {
            hints.performance_mode: (hints.PerformanceMode.THROUGHPUT if hint == "throughput"
                                     else hints.PerformanceMode.LATENCY),
            hints.inference_precision: (openvino.Type.bf16 if precision == "bf16"
                                        else openvino.Type.f32),
        }
        self.path, self.precision, self.hint = path, precision, hint
        self.compiled = core.compile_model(model, device, config)
        (model_input,) = self.compiled.inputs
        self.input_shape = tuple(None if d.is_dynamic else d.get_length()
                                 for d in model_input.get_partial_shape())
        self.input_dtype = "uint8" if model_input.get_element_type() == openvino.Type.u8 \
            else "float32"
        self.requests = openvino.AsyncInferQueue(
            self.compiled, self.compiled.get_property(props.optimal_number_of_infer_requests))

    def _run(self, images):
        """Split the batch over the asynchronous requests; outputs in input order."""
        chunk = math.ceil(len(images) / len(self.requests))
        outputs = {}
        self.requests.set_callback(
            lambda request, start: outputs.__setitem__(start, request.get_output_tensor(0).data.copy()))
        for start in range(0, len(images), chunk):
            self.requests.start_async(images[start:start + chunk], userdata=start)
        self.requests.wait_all()
        return np.concatenate([outputs[start] for start in sorted(outputs)])


def capabilities(device="CPU", core=None):
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device``, e.g. ``['FP32', 'INT8', 'BF16']``."""
    if core is None:
        import openvino

        core = openvino.Core()
    return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))


def supports_bf16(device="CPU", core=None):
    """Whether OpenVINO runs bfloat16 natively on ``device``."""
    return "BF16" in capabilities(device, core)
