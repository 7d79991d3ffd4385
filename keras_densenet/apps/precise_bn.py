"""Precise BatchNorm statistics (Wu and Johnson 2021): the moving statistics recomputed.

Keras' BatchNormalization keeps an exponential moving average of batch
statistics (momentum 0.99: the last few hundred steps weigh most). In a run of
few steps, or while the weights still change fast, that average lags the
network the weights now make, and evaluation, ``classify`` and every export,
which all normalize with it, see a worse model than training reported.
``recompute_population_statistics`` replaces it, in every trainable BN layer
at once, by the mean and variance of the layer's inputs over a fixed set of
training images, computed in training-mode forward passes with the weights
untouched. The model's builder, its defaults and published weights are not
changed: this is a step of training.
"""

import keras
import numpy as np

SETTLE_IMAGES = 1024
"""Training images the statistics are computed over (fewer if the training split is smaller)."""


def batch_norm_layers(model):
    """Every trainable BatchNormalization layer of ``model``, nested ones included:
    the Keras class and the memory-efficient modes' subclasses of it."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def recompute_population_statistics(model, images, forward=None):
    """Set every trainable BN layer's ``moving_mean`` and ``moving_variance`` to the
    mean and (biased) variance of its inputs over ``images``.

    Args:
        model: a Keras model.
        images: an iterable of input batches ``(batch, height, width, 3)`` (a
            ``tf.data.Dataset`` of images alone, or of ``(images, labels)``).
        forward: ``training_forward(model)``, to reuse one compiled pass across
            calls (default: a new one).

    Each batch goes through ``model(batch, training=True)`` once: the layers
    normalize with batch statistics as in training, and each layer's own code
    (``momentum`` set to 0 for the pass) leaves that batch's moments in its
    moving statistics, which are read back and pooled over all images (batches
    weighted by their size). Weights and optimizer state are not changed;
    dropout, if any, is active as in training. Layers that are not trainable
    (frozen for fine-tuning) keep their statistics.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    count, sums, squares = 0, None, None
    try:
        for layer in layers:
            layer.momentum = 0.0  # read when the forward pass is traced, below
        forward = forward or training_forward(model)
        for batch in images:
            batch = batch[0] if isinstance(batch, (tuple, list)) else batch
            forward(batch)
            size = int(batch.shape[0])
            means = [np.asarray(keras.ops.convert_to_numpy(layer.moving_mean), "float64")
                     for layer in layers]
            variances = [np.asarray(keras.ops.convert_to_numpy(layer.moving_variance),
                                    "float64") for layer in layers]
            if sums is None:
                sums = [np.zeros_like(m) for m in means]
                squares = [np.zeros_like(m) for m in means]
            for i, (mean, variance) in enumerate(zip(means, variances)):
                sums[i] += size * mean
                squares[i] += size * (variance + mean**2)
            count += size
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not count:
        raise ValueError("recompute_population_statistics: images holds no batch.")
    for layer, total, square in zip(layers, sums, squares):
        mean = total / count
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(
            np.maximum(square / count - mean**2, 0.0).astype(layer.moving_variance.dtype))


def training_forward(model):
    """``model(x, training=True)`` without gradients, compiled on TensorFlow (traced on
    first call: call it with the BN layers' ``momentum`` at 0, as
    ``recompute_population_statistics`` does)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=True), reduce_retracing=True)
    if keras.backend.backend() == "torch":
        import torch

        def forward(x):
            with torch.no_grad():
                return model(x, training=True)

        return forward
    return lambda x: model(x, training=True)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recompute the population statistics (``recompute_population_statistics``)
    over ``images`` before each evaluation that follows training steps: every
    validation in ``fit`` (``on_test_begin``) and, through ``settle()``, before
    the final test and saving.

    Args:
        images: the batches to compute the statistics over (fixed: the same in
            every call, and on every worker of a distributed run).
    """

    def __init__(self, images):
        super().__init__()
        self.images = images
        self.forward = None
        self.stale = False  # a restored backup's statistics were settled when it was saved

    def on_train_batch_end(self, batch, logs=None):
        self.stale = True

    def on_test_begin(self, logs=None):
        self.settle()

    def settle(self):
        """Recompute the statistics if training steps ran since they last were."""
        if self.stale:
            self.forward = self.forward or training_forward(self.model)
            recompute_population_statistics(self.model, self.images, self.forward)
            self.stale = False
