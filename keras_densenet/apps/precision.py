"""``--precision``: the Keras dtype policy a run trains under, refused where hardware lacks it."""

import contextlib

from keras_densenet.apps.recipes import PRECISIONS
from keras_densenet.checks import check_choice

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags of x86 CPUs with bfloat16 arithmetic (AVX512-BF16, AMX)."""


def accelerators():
    """The Keras backend's GPUs (``[]`` on a CPU-only machine)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.list_physical_devices("GPU")
    if backend == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return list(range(torch.cuda.device_count()))
    return []


def cpu_has_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU has bfloat16 arithmetic (``CPU_BF16_FLAGS``; ``False`` if unknown)."""
    try:
        with open(cpuinfo) as handle:
            flags = {flag for line in handle if line.startswith("flags")
                     for flag in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & set(CPU_BF16_FLAGS))


def check_precision(precision):
    """A one-line ``ValueError`` unless ``precision`` (a ``PRECISIONS`` name) runs here:
    ``bf16`` needs a GPU or a CPU with ``CPU_BF16_FLAGS``, ``float16`` a GPU."""
    check_choice("precision", precision, tuple(PRECISIONS))
    if precision == "float32" or accelerators():
        return
    if precision == "float16":
        raise ValueError("--precision float16 needs a GPU (this machine has none); on a CPU "
                         "use --precision bf16 where it has AVX512-BF16 or AMX, or float32.")
    if not cpu_has_bf16():
        raise ValueError(f"--precision bf16 needs a GPU or a CPU with bfloat16 arithmetic "
                         f"({' or '.join(CPU_BF16_FLAGS)} in /proc/cpuinfo); this one has "
                         "neither: use --precision float32.")


@contextlib.contextmanager
def precision_policy(precision):
    """While the context is open, Keras' global dtype policy is ``PRECISIONS[precision]``
    (the previous one is restored); check it first with ``check_precision``."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
