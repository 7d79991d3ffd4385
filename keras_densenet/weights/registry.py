"""The registry: which formats exist, which published files exist, and fetching them.

``FORMATS`` lists every ``WeightFormat`` (adding a format: a module and its
line here). ``manifest.json`` (shipped in the package, documented in
``weights/README.md``) lists the published files: ``sources`` (each with its
file format and the evaluation settings its weights expect) and ``entries``
(architecture, source, include_top, url, file name, hash, optionally the
file's ``size`` in bytes). ``verify_published`` checks any file the manifest
lists against its published hash, however it was obtained.
"""

import functools
import hashlib
import importlib.resources
import json
import os

from keras_densenet.weights import keras3, keras_hub, legacy_h5, pytorch

FORMATS = {fmt.name: fmt for fmt in (keras3.FORMAT, legacy_h5.KERAS_APPLICATIONS,
                                     legacy_h5.ORIGINAL_KERAS, pytorch.STATE_DICT,
                                     pytorch.SAFETENSORS, keras_hub.KERAS_HUB)}


def detect(path):
    """The ``WeightFormat`` of the weights file (or preset directory) at ``path``;
    ``ValueError`` if none reads it. A directory's ``head`` is ``b""``."""
    head = b""
    if not os.path.isdir(path):
        with open(path, "rb") as handle:
            head = handle.read(16)
    for fmt in FORMATS.values():
        if fmt.detect(path, head):
            return fmt
    raise ValueError(
        f"{path!r} is not a weights file this package reads: expected a Keras h5 "
        "(.h5/.weights.h5), a PyTorch state dict (.pth), a .safetensors file or a keras-hub "
        "DenseNet preset directory (config.json naming DenseNetBackbone).")


@functools.lru_cache(maxsize=1)
def _manifest():
    text = importlib.resources.files("keras_densenet.weights").joinpath(
        "manifest.json").read_text()
    return json.loads(text)


def manifest():
    """The published weight files: a list of dicts (architecture, source, include_top, url, ...)."""
    return _manifest()["entries"]


def sources():
    """``{source: {format, preprocessing, crop_pct, interpolation, description}}``."""
    return _manifest()["sources"]


SOURCES = tuple(sources())
"""Names of the published weight families, for ``weights_source``."""


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


def download(entry, cache_dir=None):
    """Fetch a manifest entry with ``keras.utils.get_file`` (cached, hash-checked); its path.

    The file is cached as ``CACHE_DIR/densenet/FILE_NAME``; ``cache_dir``
    defaults to Keras' own (``~/.keras``) and is created if missing (get_file
    would otherwise fall back to ``/tmp/.keras``). An ``md5``/``sha256`` entry is
    checked by get_file; a ``sha256_prefix`` entry (torchvision publishes only
    the first 8 hex digits, in the file name) is checked here after the download.
    An entry with ``hash_algorithm: "none"`` (no published hash is known) is
    downloaded but not trusted: ``ValueError`` gives its sha256 and cached path,
    to be passed as ``weights=PATH`` once the user has checked it.
    """
    import keras

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
        digest = file_hash(path)
        if not digest.startswith(entry["hash"]):
            os.remove(path)
            raise ValueError(f"{entry['file_name']} from {entry['url']} has sha256 {digest}, "
                             f"which does not start with {entry['hash']}: the download is "
                             "corrupt or not the published file (removed from the cache).")
    if entry["hash_algorithm"] == "none":
        raise ValueError(
            f"{entry['file_name']} from {entry['url']} has no published hash in "
            f"keras_densenet's manifest, so it is not loaded unchecked. Downloaded to {path} "
            f"(sha256 {file_hash(path)}); compare that with the hash its publisher shows and pass "
            "weights=PATH to use it.")
    return path


def verify_published(path):
    """Check a file that the manifest lists against its published hash, before loading it.

    A file is listed when its name is an entry's ``file_name`` or its size an
    entry's ``size``; it passes if it matches one of those entries' hashes
    (``md5``, ``sha256``, or the ``sha256_prefix`` torchvision publishes), else
    ``ValueError`` names the file and the expected and found hashes. A
    directory (a keras-hub preset) is checked file by file. Unlisted files and
    entries without a published hash (``hash_algorithm: "none"``) are not checked.
    """
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if os.path.isfile(os.path.join(path, name)):
                verify_published(os.path.join(path, name))
        return
    name, size = os.path.basename(path), os.path.getsize(path)
    listed = sorted((e for e in manifest() if e["hash_algorithm"] != "none"
                     and (e["file_name"] == name or e.get("size") == size)),
                    key=lambda e: e["file_name"] != name)  # a name match first
    found = {}
    for entry in listed:
        algorithm = "md5" if entry["hash_algorithm"] == "md5" else "sha256"
        found.setdefault(algorithm, file_hash(path, algorithm))
        if (found[algorithm].startswith(entry["hash"]) if entry["hash_algorithm"] ==
                "sha256_prefix" else found[algorithm] == entry["hash"]):
            return
    if listed:
        entry = listed[0]
        algorithm = "md5" if entry["hash_algorithm"] == "md5" else "sha256"
        by_name = entry["file_name"] == name
        raise ValueError(
            f"{path!r} has the {'name' if by_name else 'size'} of the published "
            f"{entry['file_name']} ({entry['source']} {entry['architecture']}) but not its "
            f"hash: expected {entry['hash_algorithm']} {entry['hash']}, found {algorithm} "
            f"{found[algorithm]}. The file is damaged or not the published one: download it "
            f"again{', or give a file of your own another name' if by_name else ''}.")


def file_hash(path, algorithm="sha256"):
    """Hex digest (``"sha256"`` or ``"md5"``) of the file at ``path``."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
