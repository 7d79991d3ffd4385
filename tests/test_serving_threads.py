"""keras_densenet.runtime predictors shared by the threads of a service: half the threads call
``predict``, the others run streams (``predict_stream``), at once on one predictor."""

import threading
import time

import numpy as np
import pytest

from keras_densenet import DenseNet
from keras_densenet import runtime
from keras_densenet.export import export

THREADS = 8
SECONDS = 30
"""How long the threads call one predictor."""
BATCH_SIZES = (1, 3, 8)
"""One image (OpenVINO's latency model) and batches split over throughput streams."""


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``{suffix: path}``: a tiny DenseNet at 32 px exported to ONNX and OpenVINO IR."""
    model = DenseNet(nb_dense_block=2, nb_layers_per_block=[2, 2], growth_rate=8, nb_filter=16,
                     bottleneck=True, reduction=0.5, classes=10, input_shape=(32, 32, 3))
    folder = tmp_path_factory.mktemp("threads")
    return {suffix: export(model, str(folder / f"m{suffix}"), format, preprocessing="torch")
            for suffix, format in [(".onnx", "onnx"), (".xml", "openvino")]}


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".xml", ".onnx"])
def test_threads_sharing_a_predictor_get_the_single_threaded_results(exports, suffix):
    pytest.importorskip("openvino" if suffix == ".xml" else "onnxruntime")
    predictor = runtime.load(exports[suffix])
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (size, 32, 32, 3), dtype="uint8") for size in BATCH_SIZES]
    expected = [predictor.predict(batch) for batch in batches]
    streamed = [np.stack(list(predictor.predict_stream(batch))) for batch in batches]
    calls, mismatches, errors = [0] * THREADS, [], []
    deadline = time.monotonic() + SECONDS

    def serve(thread):
        try:
            while time.monotonic() < deadline:
                index = (thread + calls[thread]) % len(batches)
                if thread % 2:
                    outputs = np.stack(list(predictor.predict_stream(iter(batches[index]))))
                    matched = np.array_equal(outputs, streamed[index])
                else:
                    matched = np.array_equal(predictor.predict(batches[index]), expected[index])
                if not matched:
                    mismatches.append((BATCH_SIZES[index], "stream" if thread % 2 else "call"))
                calls[thread] += 1
        except Exception as error:  # reported below, with the thread's call count
            errors.append(repr(error))

    threads = [threading.Thread(target=serve, args=(thread,), daemon=True)
               for thread in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SECONDS + 60)
    assert not any(thread.is_alive() for thread in threads), "a call hung"
    assert not errors and not mismatches, (errors[:3], mismatches[:3], calls)
    assert min(calls) > 0, calls
