"""Predictions from an exported DenseNet without Keras: ONNX (onnxruntime) or OpenVINO IR.

    from keras_densenet.runtime import load
    predictor = load("densenet.xml", precision="bf16")   # or "densenet.onnx"
    scores = predictor.predict(images)                    # (batch, classes) numpy array
    for row in predictor.predict_stream(camera_frames):   # one image at a time, in order
        ...                                               # (classes,) numpy array each

This module needs only numpy and the runtime of the file it loads
(``onnxruntime`` for ``.onnx``, ``openvino`` for ``.xml``), imported when a
file is loaded; it never imports Keras or TensorFlow, so a service can use it
alone. Files come from ``keras_densenet.export.export`` (input ``images``;
``uint8`` when preprocessing is baked in). A predictor may be shared by the
threads of a service: concurrent ``predict`` and ``predict_stream`` calls
are safe (onnxruntime's session is; OpenVINO calls each run on infer requests
of their own).

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

import collections
import contextlib
import math
import queue
import threading

import numpy as np

from keras_densenet.checks import check_bool

PRECISIONS = ("f32", "bf16", "int8")
HINTS = ("auto", "throughput", "latency")
RUNTIMES = {".onnx": "onnx", ".xml": "openvino"}


def load(path, precision=None, hint="auto", device="CPU", pinning=None):
    """A ``Predictor`` for the exported file ``path`` (``.onnx`` or OpenVINO ``.xml``).

    Args:
        path: an ONNX file (run by onnxruntime, ``"f32"`` only) or an
            OpenVINO IR ``.xml`` (its ``.bin`` next to it).
        precision: ``None`` (what the file is), ``"f32"``, ``"bf16"`` or
            ``"int8"`` (see the module doc).
        hint: OpenVINO's performance hint: ``"auto"`` (default: latency for
            one image, throughput for more), ``"throughput"`` (several streams; a
            batch is split over asynchronous requests) or ``"latency"`` (one
            request uses every core). Ignored by onnxruntime.
        device: OpenVINO device name (default ``"CPU"``).
        pinning: whether OpenVINO pins its inference threads to CPU cores
            (``ENABLE_CPU_PINNING``): ``None`` (default) leaves OpenVINO's
            choice; ``False`` can help where other processes use the same cores
            (a pinned thread waits for its busy core instead of moving).
            Ignored by onnxruntime.

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
    if pinning is not None:
        check_bool("pinning", pinning)
    if runtime == "onnx":
        return ONNXPredictor(path, precision)
    return OpenVINOPredictor(path, precision, hint, device, pinning)


class Predictor:
    """Runs an exported model: ``predict(images) -> (batch, classes)`` numpy array.

    Attributes:
        path, runtime (``"onnx"``/``"openvino"``), precision (``PRECISIONS``),
        input_shape (with ``None`` for free sizes, batch first) and
        input_dtype (``"uint8"`` when preprocessing is baked in, else ``"float32"``).
    """

    runtime = None

    def predict(self, images):
        """Model outputs for ``images`` (``(batch, *input_shape[1:])``), float32.

        A ``uint8`` input (preprocessing baked in) takes integer arrays of any
        dtype whose values lie in 0..255; other values are refused with a
        ``ValueError``, never wrapped or rescaled (a 16-bit image is not
        guessed at: scale it to 0..255 first, e.g. ``np.round(images / 257)``).
        Safe to call from several threads at once.
        """
        images = np.asarray(images)
        self._check(images)
        return self._run(images.astype(self.input_dtype, copy=False))

    def predict_stream(self, images):
        """Yield the outputs of each item of the iterable ``images``, in order, float32.

        An item is one image (``input_shape[1:]``: yields a ``(classes,)``
        row) or a small batch (``(n, *input_shape[1:])``: yields ``(n,
        classes)``), checked as ``predict`` checks a batch; ``images`` may be
        a generator (read lazily) or an array (its rows are single images).
        OpenVINO keeps several items in flight at once (``OpenVINOPredictor``);
        onnxruntime runs each item as it comes (its threads already use every
        core). An item's output is yielded once it is ready and the next item
        has been taken, so the stream holds at most as many items as run at
        once. A bad item raises a one-line ``ValueError`` naming its index
        when it is reached, after the outputs of the items before it.
        Safe to use from several threads at once, each with its own stream.
        """
        for single, output in self._stream(self._stream_items(images)):
            yield output[0] if single else output

    def _stream_items(self, images):
        """``(single, batch)`` for each item: ``single`` when the item was one image."""
        for index, image in enumerate(images):
            image = np.asarray(image)
            self._check(image, item=index)
            single = image.ndim == len(self.input_shape) - 1
            yield single, (image[None] if single else image).astype(self.input_dtype, copy=False)

    def _stream(self, items):
        """Yield ``(tag, outputs)`` for each ``(tag, batch)`` of ``items``, in order."""
        for tag, batch in items:
            yield tag, self._run(batch)

    def _check(self, images, item=None):
        """A one-line ``ValueError`` for ``images`` that ``predict`` cannot take: a batch, or
        for ``item`` (an index of a stream) one image or a batch."""
        shape = self.input_shape[1:]
        sizes = ", ".join("any" if s is None else str(s) for s in shape)
        ranks = (len(shape) + 1,) if item is None else (len(shape), len(shape) + 1)
        if images.ndim not in ranks or any(size is not None and size != actual for size, actual
                                           in zip(shape, images.shape[images.ndim - len(shape):])):
            wanted = (f"images must have shape (batch, {sizes})" if item is None else
                      f"stream item {item} must be an image of shape ({sizes}) or a batch of them")
            raise ValueError(f"{wanted} for {self.path}; got {images.shape}.")
        prefix = "" if item is None else f"stream item {item}: "
        if self.input_dtype == "uint8" and not np.issubdtype(images.dtype, np.integer):
            raise ValueError(f"{prefix}{self.path} takes uint8 images (preprocessing is baked "
                             f"in); got {images.dtype}.")
        if self.input_dtype == "uint8" and images.dtype != np.uint8 and images.size and (
                images.min() < 0 or images.max() > 255):
            raise ValueError(f"{prefix}{self.path} takes uint8 images, values 0..255 "
                             f"(preprocessing is baked in); got {images.dtype} values "
                             f"{images.min()}..{images.max()} (scale 16-bit images to 0..255 "
                             "first, e.g. np.round(images / 257)).")

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
    """An OpenVINO IR, compiled for each input shape it is given, with a performance hint.

    OpenVINO runs a network faster when its input shape is fixed at compile
    time, so each distinct batch shape is compiled once, on first use
    (DenseNet-121: a second or two), and kept; at most ``MAX_COMPILED`` of them
    (the least recently used is dropped). With the ``"throughput"`` hint a batch
    is split into equal chunks, one per stream, run as concurrent infer requests;
    ``"latency"`` runs it as one request on every core; ``"auto"`` takes latency
    for a single image and throughput otherwise.

    ``predict_stream`` pipelines a stream of single images (or small batches)
    on an ``openvino.AsyncInferQueue`` per item shape, each shape compiled
    static as ``predict`` compiles it: ``"auto"`` and ``"throughput"`` run it
    with the throughput hint (one image per stream, as many in flight as
    OpenVINO's optimal number of infer requests), ``"latency"`` with the
    latency hint (every core on one image; ``STREAM_DEPTH`` in flight, so the
    next image waits inside OpenVINO rather than in Python).

    One predictor can be shared by threads: each call runs on infer requests
    that no other call holds (``InferRequestPool``; a stream makes its own
    queue), so calls from several threads run concurrently; only finding (or
    compiling) a shape's model is done under a lock.
    """

    runtime = "openvino"
    MAX_COMPILED = 8
    STREAM_DEPTH = 2
    """The fewest items a stream keeps in flight."""

    def __init__(self, path, precision=None, hint="auto", device="CPU", pinning=None):
        import openvino

        self.core = openvino.Core()
        self.model = self.core.read_model(path)
        quantized = any(op.get_type_name() == "FakeQuantize" for op in self.model.get_ops())
        precision = precision or ("int8" if quantized else "f32")
        if precision == "int8" and not quantized:
            raise ValueError(f"{path} is not quantized; export it with quantize=calibration "
                             "images (keras-densenet export --format openvino --calibration DIR).")
        if precision != "int8" and quantized:
            raise ValueError(f"{path} is int8-quantized; use precision='int8' (or None).")
        if precision == "bf16" and not supports_bf16(device, self.core):
            raise ValueError(
                f"precision='bf16' needs a {device} with bfloat16 support (OpenVINO's "
                f"OPTIMIZATION_CAPABILITIES reports {capabilities(device, self.core)}); use 'f32' or "
                "'int8' here.")
        self.path, self.precision, self.hint, self.device = path, precision, hint, device
        self.pinning = pinning
        (model_input,) = self.model.inputs
        self.input_shape = tuple(None if d.is_dynamic else d.get_length()
                                 for d in model_input.get_partial_shape())
        self.input_dtype = "uint8" if model_input.get_element_type() == openvino.Type.u8 \
            else "float32"
        self._lock = threading.Lock()  # guards the two caches below, not inference
        self._compiled = collections.OrderedDict()  # (hint, shape) -> InferRequestPool, LRU first
        self._request_counts = {}  # "throughput" -> the number of streams it runs

    def _run(self, images):
        """Split the batch over concurrent infer requests; outputs in input order."""
        hint = self.hint if self.hint != "auto" else ("latency" if len(images) == 1
                                                     else "throughput")
        chunk = math.ceil(len(images) / self._request_count(hint))
        parts = [images[start:start + chunk] for start in range(0, len(images), chunk)]
        with contextlib.ExitStack() as held:
            requests = [held.enter_context(self._pool(hint, part.shape).request())
                        for part in parts]
            for request, part in zip(requests, parts):
                request.start_async(part)
            for request in requests:
                request.wait()
            return np.concatenate([request.get_output_tensor(0).data for request in requests])

    def _stream(self, items):
        """``Predictor._stream`` with several items in flight, on ``AsyncInferQueue``s."""
        import openvino
        import openvino.properties as props

        hint = "latency" if self.hint == "latency" else "throughput"
        queues, done, position, taken = {}, {}, 0, 0

        def finished(request, userdata):  # on an OpenVINO thread
            index, tag = userdata
            done[index] = tag, request.get_output_tensor(0).data.copy()

        items, bad = enumerate(items), None
        try:
            while True:
                try:
                    index, (tag, batch) = next(items)
                except StopIteration:
                    break
                except ValueError as error:  # a bad item: the outputs before it come first
                    bad = error
                    break
                if batch.shape not in queues:
                    compiled = self._pool(hint, batch.shape).compiled
                    queues[batch.shape] = openvino.AsyncInferQueue(compiled, max(
                        self.STREAM_DEPTH,
                        compiled.get_property(props.optimal_number_of_infer_requests)))
                    queues[batch.shape].set_callback(finished)
                queues[batch.shape].start_async(batch, (index, tag))  # waits for an idle request
                while position in done:
                    yield done.pop(position)
                    position += 1
                taken = index + 1
            for queue in queues.values():
                queue.wait_all()
            while position in done:
                yield done.pop(position)
                position += 1
            if position < taken:
                raise RuntimeError(f"OpenVINO gave no output for stream item {position}.")
            if bad is not None:
                raise bad
        finally:  # also when the caller stops early or an item is bad: nothing left running
            for queue in queues.values():
                queue.wait_all()

    def _config(self, hint):
        import openvino
        import openvino.properties.hint as hints

        return {
            hints.performance_mode: (hints.PerformanceMode.THROUGHPUT if hint == "throughput"
                                     else hints.PerformanceMode.LATENCY),
            hints.inference_precision: (openvino.Type.bf16 if self.precision == "bf16"
                                        else openvino.Type.f32),
            **({} if self.pinning is None else {hints.enable_cpu_pinning: self.pinning}),
        }

    def _request_count(self, hint):
        """How many requests ``hint`` runs at once: 1 for latency; for throughput, the
        streams OpenVINO chooses for this CPU (asked once, by compiling the file as it is)."""
        if hint == "latency":
            return 1
        with self._lock:
            if hint not in self._request_counts:
                import openvino.properties as props

                compiled = self.core.compile_model(self.model, self.device, self._config(hint))
                self._request_counts[hint] = compiled.get_property(
                    props.optimal_number_of_infer_requests)
            return self._request_counts[hint]

    def _pool(self, hint, shape):
        """The ``InferRequestPool`` of the model compiled for ``hint`` and input ``shape``."""
        key = (hint, shape)
        with self._lock:
            pool = self._compiled.pop(key, None)
            if pool is None:
                model = self.model.clone()
                model.reshape(list(shape))
                pool = InferRequestPool(
                    self.core.compile_model(model, self.device, self._config(hint)))
                if len(self._compiled) >= self.MAX_COMPILED:
                    self._compiled.popitem(last=False)
            self._compiled[key] = pool  # most recently used last
            return pool


class InferRequestPool:
    """The idle infer requests of one compiled OpenVINO model, shared by threads.

    ``with pool.request() as request:`` lends a request that no other caller
    holds (a new one when all are busy), and takes it back, finished, after the
    block. A pool holds as many requests as were ever in use at once.
    """

    def __init__(self, compiled):
        self.compiled = compiled
        self._idle = queue.SimpleQueue()

    @contextlib.contextmanager
    def request(self):
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            yield request
        finally:
            request.wait()  # never lend out a request still running
            self._idle.put(request)


def capabilities(device="CPU", core=None):
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device``, e.g. ``['FP32', 'INT8', 'BF16']``."""
    if core is None:
        import openvino

        core = openvino.Core()
    return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))


def supports_bf16(device="CPU", core=None):
    """Whether OpenVINO runs bfloat16 natively on ``device``."""
    return "BF16" in capabilities(device, core)
