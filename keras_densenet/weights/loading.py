"""Weights: the registry of published files, and loading any of them into our models.

``resolve`` runs before the model is built (it never downloads): it turns the
``weights=`` argument into a ``WeightsPlan`` saying which BatchNormalization
epsilon, stem padding and input channels the weights need. ``load`` runs after
building: it downloads (``keras.utils.get_file``, hash-checked, cached) if
needed, reads the file whatever its format, checks that every weighted layer
matches, and assigns the weights. The registry is ``weights_manifest.json``,
shipped in the package; ``weights/README.md`` documents it.
"""

import dataclasses
import functools
import hashlib
import importlib.resources
import json
import os
import tempfile

import keras
import numpy as np

from keras_densenet import weight_formats
from keras_densenet.memory_efficient import weighted_layers

SOURCES = ("keras_applications", "torchvision", "original_keras")
SOURCE_FORMATS = {"keras_applications": "keras_applications", "torchvision": "torch",
                  "original_keras": "original_keras"}


@dataclasses.dataclass(frozen=True)
class WeightsPlan:
    """What the builder must know about the weights before and after building.

    Attributes:
        path: local file, or ``None`` until the manifest entry is downloaded.
        file_format: a ``weight_formats.FORMATS`` key.
        bn_epsilon: epsilon the weights were trained with (``None``: any).
        stem_padding: ``"symmetric"``, ``"same"`` or ``None`` (any).
        channels: input channels the weights expect (``None``: any).
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


@functools.lru_cache(maxsize=1)
def manifest():
    """The published weight files: a list of dicts (architecture, source, include_top, url, ...)."""
    text = importlib.resources.files("keras_densenet").joinpath(
        "weights_manifest.json").read_text()
    return json.loads(text)["entries"]


def find_entry(architecture, include_top, source=None):
    """The manifest entry for ``architecture``; a top-less model may use a file with top."""
    if source is not None and source not in SOURCES:
        raise ValueError(f"weights_source must be one of {SOURCES} or None; got {source!r}.")
    candidates = [e for e in manifest() if e["architecture"] == architecture
                  and (source is None or e["source"] == source)]
    exact = [e for e in candidates if e["include_top"] == include_top]
    with_top = [e for e in candidates if e["include_top"]]
    chosen = (exact or with_top)[:1]
    if not chosen:
        published = sorted({(e["architecture"], e["source"]) for e in manifest()})
        raise ValueError(
            f"No published ImageNet weights for architecture={architecture!r}"
            f"{f' from source {source!r}' if source else ''}. Published: "
            + ", ".join(f"{a} ({s})" for a, s in published) + ".")
    return chosen[0]


def resolve(weights, *, architecture, include_top, classes, source=None):
    """The ``WeightsPlan`` for ``weights``, or ``None`` for random initialization.

    Args:
        weights: ``None``, ``"imagenet"``, or the path of a weights file in any
            format of ``weight_formats.FORMATS`` (detected by content).
        architecture: ``"densenet121"`` etc. when the model is a published
            ImageNet architecture, else ``None``.
        include_top: whether the model has its classifier.
        classes: classes of the classifier.
        source: with ``"imagenet"``, one of ``SOURCES`` (default: the first
            source publishing the architecture).
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
        entry = find_entry(architecture, include_top, source)
        return _plan(None, SOURCE_FORMATS[entry["source"]], entry=entry)
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return _plan(os.fspath(weights), weight_formats.detect(weights))
    raise ValueError(
        f"weights must be None, 'imagenet', or the path of an existing weights file; "
        f"got {weights!r}.")


def _plan(path, file_format, entry=None):
    spec = weight_formats.FORMATS[file_format]._asdict()
    if file_format == "keras3":
        spec.update(read_metadata(path))
    return WeightsPlan(path=path, file_format=file_format, bn_epsilon=spec["bn_epsilon"],
                       stem_padding=spec["stem_padding"], preprocessing=spec["preprocessing"],
                       channels=None if file_format == "keras3" else 3, entry=entry)


METADATA = ("bn_epsilon", "stem_padding", "preprocessing")
"""What a Keras 3 weights file written by ``save_weights`` records of its source."""


def save_weights(model, path, **metadata):
    """``model.save_weights(path)`` plus ``METADATA`` as HDF5 attributes, written atomically.

    ``DenseNet(weights=path)`` then builds the model with the recorded BN
    epsilon and stem padding.
    """
    import h5py

    unknown = set(metadata) - set(METADATA)
    if unknown:
        raise ValueError(f"Unknown metadata {sorted(unknown)}; known: {METADATA}.")
    temporary = path[: -len(".weights.h5")] + ".tmp.weights.h5"
    model.save_weights(temporary)
    with h5py.File(temporary, "a") as h5:
        for key, value in metadata.items():
            if value is not None:
                h5.attrs[f"keras_densenet.{key}"] = value
    os.replace(temporary, path)


def read_metadata(path):
    """The ``METADATA`` recorded in a Keras 3 weights file (only the keys present)."""
    import h5py

    with h5py.File(path, "r") as h5:
        found = {key: h5.attrs.get(f"keras_densenet.{key}") for key in METADATA}
    return {key: value.item() if hasattr(value, "item") else value
            for key, value in found.items() if value is not None}


def load(model, plan):
    """Download (if needed), read and assign ``plan``'s weights into ``model``.

    Raises ``ValueError`` naming the expected and found layers when the file
    does not fit the model; the model is left untouched in that case.
    """
    path = plan.path or download(plan.entry)
    if plan.file_format == "keras3":
        _check_keras3_file(model, path)
        model.load_weights(path)
        return
    try:
        table = weight_formats.read(path, plan.file_format, list(weighted_layers(model)))
    except ValueError as error:
        raise ValueError(f"{error} Model {model.name!r} expects {_describe(model)}.") from error
    assign(model, table, source=f"{path!r} ({weight_formats.FORMATS[plan.file_format].description})")


def assign(model, table, source="the weights file"):
    """Set every weighted layer of ``model`` from ``table`` (name -> arrays), all or nothing.

    Only the classifier (``predictions``) may be missing from the model
    (include_top=False); any other difference raises ``ValueError``.
    """
    weighted = list(weighted_layers(model).values())
    problems = []
    for layer in weighted:
        expected = [tuple(w.shape) for w in layer.get_weights()]
        found = [tuple(a.shape) for a in table.get(layer.name, [])]
        if layer.name not in table:
            problems.append(f"{layer.name}: missing from the file")
        elif found != expected:
            problems.append(f"{layer.name}: model has {expected}, file has {found}")
    extra = sorted(set(table) - {layer.name for layer in weighted} - {"predictions"})
    if problems or extra:
        raise ValueError(
            f"The weights in {source} do not fit model {model.name!r}: the model has "
            f"{_describe(model)}, the file {len(table)} ({_count(table.values())} values). "
            + ("First mismatches: " + "; ".join(problems[:3]) + ". " if problems else "")
            + (f"Layers the model lacks: {', '.join(extra[:5])}. " if extra else "")
            + "Build the architecture the file was made for.")
    for layer in weighted:
        layer.set_weights(table[layer.name])


def download(entry, cache_dir=None):
    """Fetch a manifest entry with ``keras.utils.get_file`` (cached, hash-checked); its path.

    The file is cached as ``CACHE_DIR/densenet/FILE_NAME``; ``cache_dir``
    defaults to Keras' own (``~/.keras``) and is created if missing (get_file
    would otherwise fall back to ``/tmp/.keras``). An ``md5``/``sha256`` entry is
    checked by get_file; a ``sha256_prefix`` entry (torchvision publishes only
    the first 8 hex digits, in the file name) is checked here after the download.
    """
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
    full_hash = entry["hash_algorithm"] in ("md5", "sha256")
    try:
        path = keras.utils.get_file(
            entry["file_name"], entry["url"], cache_subdir="densenet", cache_dir=cache_dir,
            file_hash=entry["hash"] if full_hash else None,
            hash_algorithm=entry["hash_algorithm"] if full_hash else "auto")
    except ValueError:  # hash mismatch: get_file's message says so
        raise
    except Exception as error:  # get_file raises a bare Exception for network failures
        raise OSError(
            f"Could not download {entry['file_name']} from {entry['url']} ({error}). "
            "Download it where the network allows and pass weights=PATH.") from error
    if entry["hash_algorithm"] == "sha256_prefix":
        digest = _sha256(path)
        if not digest.startswith(entry["hash"]):
            os.remove(path)
            raise ValueError(f"{entry['file_name']} from {entry['url']} has sha256 {digest}, "
                             f"which does not start with {entry['hash']}: the download is "
                             "corrupt or not the published file (removed from the cache).")
    return path


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_keras3_file(model, path):
    """Compare the file's variables with those this model would save, before loading."""
    import h5py

    def variables(file):
        shapes = {}
        with h5py.File(file, "r") as h5:
            h5.visititems(lambda name, obj: shapes.__setitem__(name, obj.shape)
                          if isinstance(obj, h5py.Dataset) else None)
        return shapes

    with tempfile.TemporaryDirectory() as folder:
        reference = os.path.join(folder, "model.weights.h5")
        model.save_weights(reference)
        expected = variables(reference)
    found = variables(path)
    if found != expected:
        differing = sorted(set(found) ^ set(expected)) or sorted(
            k for k in expected if expected[k] != found[k])
        raise ValueError(
            f"The Keras weights file {path!r} does not fit model {model.name!r}: the model has "
            f"{len(expected)} variables ({sum(int(np.prod(s)) for s in expected.values())} "
            f"values), the file {len(found)} ({sum(int(np.prod(s)) for s in found.values())}). "
            f"First differences: {', '.join(differing[:3])}. Build the architecture the file "
            "was saved from.")


def _describe(model):
    """``"N weighted layers (V values)"`` of ``model``."""
    weighted = weighted_layers(model).values()
    return f"{len(weighted)} weighted layers ({_count(l.get_weights() for l in weighted)} values)"


def _count(arrays_lists):
    return sum(int(np.prod(a.shape)) for arrays in arrays_lists for a in arrays)
