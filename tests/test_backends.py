"""The same weights give the same outputs on TensorFlow, JAX and PyTorch.

Each backend runs tests/backend_worker.py in its own process (the backend is
fixed at import): building, both data formats, weights in Keras 3 and
safetensors (torchvision layout) form, memory_efficient (True and "full"), FC-DenseNet,
preprocessing of backend tensors, a training step, .keras save/load, an
OpenVINO export run by ``keras_densenet.runtime``, and the clear errors of the
TensorFlow-only features.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_densenet import DenseNet, DenseNetFCN
from keras_densenet.apps.source_models import _torch_densenet

sys.path.insert(0, os.path.dirname(__file__))
from backend_worker import CIFAR, FCN, IMAGENET  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")
WORKER = os.path.join(os.path.dirname(__file__), "backend_worker.py")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    for module in ("jax", "torch"):
        pytest.importorskip(module)
    workdir = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (3, 64, 64, 3)).astype("float32")
    x = (raw / 255.0 - 0.5).astype("float32")
    np.savez(workdir / "inputs.npz", x=x, raw=raw, labels=np.array([0, 1, 2]))
    cifar = DenseNet(**CIFAR, input_shape=(64, 64, 3))
    _randomize_statistics(cifar, rng)
    cifar.save_weights(str(workdir / "cifar.weights.h5"))
    DenseNetFCN((32, 32, 3), **FCN).save_weights(str(workdir / "fcn.weights.h5"))
    torch_logits = _small_torch_reference(workdir, x)

    outputs = {}
    for backend in BACKENDS:
        result = subprocess.run([sys.executable, WORKER, str(workdir)], capture_output=True,
                                text=True, timeout=300,
                                env={**os.environ, "KERAS_BACKEND": backend})
        assert result.returncode == 0, f"{backend}:\n{result.stderr[-4000:]}"
        assert f"ok {backend}" in result.stdout
        outputs[backend] = dict(np.load(workdir / f"{backend}.npz"))
    return outputs, torch_logits


def _randomize_statistics(model, rng):
    for layer in model.layers:
        if hasattr(layer, "moving_variance"):
            layer.moving_mean.assign(rng.normal(0, 0.3, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))


def _small_torch_reference(workdir, x):
    import torch
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    reference = _torch_densenet(tuple(IMAGENET["nb_layers_per_block"]), IMAGENET["growth_rate"],
                                IMAGENET["nb_filter"], IMAGENET["classes"]).eval()
    with torch.no_grad():
        for name, tensor in reference.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                tensor.normal_(0, 0.3)
        logits = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    save_file({k: v.numpy() for k, v in reference.state_dict().items()},
              str(workdir / "torch_small.safetensors"))
    return logits


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_outputs_equal_tensorflow(results, backend):
    outputs, _ = results
    for key, expected in outputs["tensorflow"].items():
        if key == "openvino" and backend == "jax":
            continue  # no OpenVINO export from JAX (a clear error, checked in the worker)
        np.testing.assert_allclose(outputs[backend][key], expected, atol=1e-4, err_msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_formats_agree_and_torch_weights_reproduce_torch(results, backend):
    outputs, torch_logits = results
    out = outputs[backend]
    np.testing.assert_allclose(out["cifar_first"], out["cifar_last"], atol=1e-4)
    np.testing.assert_allclose(out["efficient"], out["cifar_last"], atol=1e-5)
    np.testing.assert_allclose(out["full"], out["cifar_last"], atol=1e-5)
    np.testing.assert_allclose(out["torch_last"], torch_logits, atol=1e-4)
    np.testing.assert_allclose(out["torch_first"], torch_logits, atol=1e-4)
    if backend != "jax":  # from JAX: a clear error, checked in the worker
        np.testing.assert_allclose(out["openvino"], torch_logits, atol=1e-4)
