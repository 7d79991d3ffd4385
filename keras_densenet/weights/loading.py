"""Loading weights into a model: plan before building, load after.

``resolve`` runs before the model is built (it never downloads): it turns the
``weights=`` argument into a ``WeightsPlan`` saying which BatchNormalization
epsilon, stem padding and input channels the weights were trained on, and
checks a file that the manifest lists against its published hash. ``load``
runs after building: it downloads (``keras.utils.get_file``, hash-checked,
cached) if needed and reads the file with its format, which assigns it
(``assignment.assign``: the one gate every format goes through).
"""

import dataclasses
import os

from keras_densenet.weights import registry


@dataclasses.dataclass(frozen=True)
class WeightsPlan:
    """What the builder must know about the weights before and after building.

    Attributes:
        path: local file, or ``None`` until the manifest entry is downloaded.
        file_format: a ``registry.FORMATS`` key.
        bn_epsilon: epsilon the weights were trained with (``None``: any).
        stem_padding: ``"symmetric"``, ``"same"`` or ``None`` (any).
        channels: input channels the weights were trained on (``None``: any); the
            default of a model built without ``input_shape``. A model with
            another channel count gets its input convolution adapted (``assign``).
        preprocessing: ``preprocess_input`` mode the weights expect (``None``: unknown).
        entry: the manifest entry to download, for ``weights="imagenet"``.
    """

    path: str
    file_format: str
    bn_epsilon: float = None
    stem_padding: str = None
    channels: int = None
    preprocessing: str = None
    entry: dict = None


def resolve(weights, *, architecture, include_top, classes, source=None):
    """The ``WeightsPlan`` for ``weights``, or ``None`` for random initialization.

    Args:
        weights: ``None``, ``"imagenet"``, or the path of a weights file (or a
            keras-hub preset directory) in any format of ``registry.FORMATS``
            (detected by content).
        architecture: ``"densenet121"`` etc. when the model is a published
            ImageNet architecture, else ``None``.
        include_top: whether the model has its classifier.
        classes: classes of the classifier.
        source: with ``"imagenet"``, one of ``registry.SOURCES`` (default: the
            first source publishing the architecture).
    """
    if source is not None and weights != "imagenet":
        raise ValueError(f'weights_source applies only to weights="imagenet"; got '
                         f"weights={weights!r} with weights_source={source!r}.")
    if weights is None:
        return None
    if weights == "imagenet":
        if architecture is None:
            raise ValueError(
                'weights="imagenet" needs a published ImageNet architecture (densenet121/161/'
                "169/201: 4 blocks, growth rate and stem as published); this configuration "
                "is not one of them.")
        if include_top and classes != 1000:
            raise ValueError(f'weights="imagenet" with include_top=True needs classes=1000; '
                             f"got classes={classes}. Use include_top=False and add your "
                             "own classifier.")
        entry = registry.find_entry(architecture, include_top, source)
        fmt = registry.FORMATS[registry.sources()[entry["source"]]["format"]]
        return WeightsPlan(path=None, file_format=fmt.name, entry=entry,
                           **fmt.requirements(None))
    if isinstance(weights, (str, os.PathLike)) and os.path.exists(weights):
        path = os.fspath(weights)
        registry.verify_published(path)
        fmt = registry.detect(path)
        return WeightsPlan(path=path, file_format=fmt.name, **fmt.requirements(path))
    raise ValueError(
        f"weights must be None, 'imagenet', or the path of an existing weights file or "
        f"keras-hub preset directory; "
        f"got {weights!r}.")


def load(model, plan):
    """Download (if needed), read and assign ``plan``'s weights into ``model``.

    Raises ``ValueError`` (see ``assign``) when the file does not fit the
    model or holds non-finite values; the model is left untouched then.
    """
    path = plan.path or registry.download(plan.entry)
    registry.FORMATS[plan.file_format].load_into(model, path)
