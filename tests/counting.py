"""Parameter counts of built models, for the tests that compare them with published figures."""

import math


def trainable_parameters(model):
    """Number of trainable scalars (conv kernels, BN gamma/beta, classifier)."""
    return sum(int(math.prod(w.shape)) for w in model.trainable_weights)
