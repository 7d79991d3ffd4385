"""Weights: resolve a ``weights=`` argument into a loading plan, and load it.

``resolve`` runs before the model is built, because some weight files need a
particular BatchNormalization epsilon or stem padding; ``load`` runs after.
"""

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class WeightsPlan:
    """What the builder must know about the weights before and after building.

    Attributes:
        path: local file to load.
        bn_epsilon: epsilon the weights were trained with (``None``: any).
        stem_padding: ``"symmetric"``, ``"same"`` or ``None`` (any).
        channels: input channels the weights expect (``None``: any).
    """

    path: str
    bn_epsilon: float = None
    stem_padding: str = None
    channels: int = None


def resolve(weights, *, architecture, include_top, classes, source=None):
    """The ``WeightsPlan`` for ``weights``, or ``None`` for random initialization.

    Args:
        weights: ``None`` or the path of a Keras 3 ``.weights.h5`` file.
        architecture: name of the published architecture being built, or ``None``.
        include_top: whether the model has its classifier.
        classes: classes of the classifier.
        source: which published weights to use with ``"imagenet"``.
    """
    if weights is None:
        return None
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return WeightsPlan(path=os.fspath(weights))
    raise ValueError(
        f"weights must be None or the path of an existing weights file; got {weights!r}."
    )


def load(model, plan):
    """Load ``plan`` into ``model``."""
    model.load_weights(plan.path)
