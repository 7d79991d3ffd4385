"""Reference weight files for the weight tests, made offline with random weights.

Each family's file is written by its own implementation: tf_keras writes the
Keras 2 h5 files (``tf_keras.applications`` for keras.applications,
``keras_densenet.apps.source_models.original_keras_densenet`` for the original
release), torch the state dicts. torchvision cannot be installed next to
torch here, so ``keras_densenet.apps.source_models.torch_densenet`` stands in for it
(torchvision's module names, BN epsilon 1e-5, symmetric stem). BN moving
statistics are random too, so a wrong epsilon or a swapped mean and variance
shows in the outputs.
"""

import numpy as np
import tf_keras
import torch

from keras_densenet.apps.source_models import torch_densenet


def images(size, n=2, seed=1):
    """``(n, size, size, 3)`` float32 standard-normal images, channels_last."""
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


def randomize_tf_keras(model, seed=0):
    """Give every layer of a tf_keras ``model`` random weights and BN statistics (in place)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            gamma, beta, mean, var = (v.shape for v in values)
            values = [rng.uniform(0.5, 1.5, gamma), rng.normal(0, 0.1, beta),
                      rng.normal(0, 0.1, mean), rng.uniform(0.5, 1.5, var)]
        else:
            values = [rng.normal(0, np.sqrt(2.0 / np.prod(v.shape[:-1])), v.shape) for v in values]
        layer.set_weights(values)
    return model


def keras_applications_model(architecture, size, include_top=True):
    """``tf_keras.applications.DenseNet{121,169,201}`` (logits out), random weights."""
    constructor = getattr(tf_keras.applications, "DenseNet" + architecture[len("densenet"):])
    return constructor(weights=None, include_top=include_top, input_shape=(size, size, 3),
                       classifier_activation=None)


def random_torch_densenet(architecture="densenet121", seed=0):
    """The torchvision-structured DenseNet in eval mode, random weights and BN statistics."""
    module = torch_densenet(architecture)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return module.eval()


def torch_logits(module, x):
    """``module``'s logits for channels_last images ``x``."""
    with torch.no_grad():
        return module(_nchw(x)).numpy()


def torch_features(module, x):
    """``module``'s final ReLU features for channels_last ``x``, channels_last."""
    with torch.no_grad():
        return torch.relu(module.features(_nchw(x))).numpy().transpose(0, 2, 3, 1)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
