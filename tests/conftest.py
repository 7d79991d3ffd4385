"""Shared pytest set-up: quiet TensorFlow, deterministic seeds, small models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow runs NCHW (channels_first) convolutions on a CPU only through oneDNN, which it
# enables by default on Intel CPUs alone; set it before TensorFlow is imported, for every
# test process and the subprocesses they start.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


@pytest.fixture
def images():
    """``images(n, size, channels=3)``: uint8-range float32 RGB images, channels_last."""

    def make(n=2, size=32, channels=3, seed=0):
        rng = np.random.default_rng(seed)
        return rng.uniform(0, 255, size=(n, size, size, channels)).astype("float32")

    return make
