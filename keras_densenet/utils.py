"""Small helpers shared by the library and the apps: the channel axis and atomic writes."""

import contextlib
import os
import shutil
import uuid

DATA_FORMATS = ("channels_last", "channels_first")


def channel_axis(data_format):
    """The channel axis of 4D image tensors: -1 for ``"channels_last"``, 1 for ``"channels_first"``."""
    return -1 if data_format == "channels_last" else 1


def split_suffix(path):
    """``("dir/model", ".weights.h5")`` for ``"dir/model.weights.h5"``: the suffix from the first dot."""
    folder, base = os.path.split(path)
    stem, dot, suffix = base.partition(".")
    return os.path.join(folder, stem), dot + suffix


@contextlib.contextmanager
def atomic_path(path, overwrite=True):
    """Yield a temporary sibling of ``path`` to write to; rename it to ``path`` on success.

    The temporary name keeps ``path``'s suffix (Keras and matplotlib choose the
    format from it) and works for files and folders (a SavedModel). On an
    exception it is removed and ``path`` is left as it was. With
    ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` first.
    An existing folder at ``path`` is replaced whole, never merged into.
    """
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path!r} already exists; pass overwrite to replace it.")
    stem, suffix = split_suffix(path)
    folder, base = os.path.split(stem)
    temporary = os.path.join(folder, f".{base}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield temporary
        move_into_place(temporary, path)
    finally:
        if os.path.isdir(temporary) and not os.path.islink(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.lexists(temporary):
            os.remove(temporary)


def move_into_place(source, path):
    """Rename ``source`` to ``path``, replacing what is there: a file in one rename; an
    existing folder (a SavedModel) is renamed aside, replaced, then removed, never merged into."""
    if os.path.isdir(source) and os.path.isdir(path) and not os.path.islink(path):
        old = source + ".old"
        os.replace(path, old)
        os.replace(source, path)
        shutil.rmtree(old)
    else:
        os.replace(source, path)


INPUT_KINDS = {"file": os.path.isfile, "folder": os.path.isdir, "file or folder": os.path.exists}


def check_input_path(path, argument, kind="file"):
    """A one-line error, before any work, when ``path`` (given as ``argument``) is not an
    existing ``kind``: ``"file"`` (default), ``"folder"`` or ``"file or folder"``."""
    if not INPUT_KINDS[kind](path):
        raise ValueError(f"{argument} {os.fspath(path)!r}: no such {kind}.")


def check_output_path(path, overwrite=False, inputs=(), argument="output"):
    """A one-line error, before any work, when ``path`` cannot be written as asked.

    Refuses any of ``inputs`` (never written over, even with ``overwrite``), an
    existing ``path`` without ``overwrite`` (``FileExistsError``), and a folder
    that does not exist or is not writable (``ValueError``).
    """
    path = os.fspath(path)
    for source in inputs:
        if os.path.exists(source) and os.path.realpath(source) == os.path.realpath(path):
            raise ValueError(f"{argument} {path!r} is the input file; choose another path.")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{argument} {path!r} already exists; pass --overwrite to "
                              "replace it.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{argument} {path!r}: the folder {folder!r} does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{argument} {path!r}: the folder {folder!r} is not writable.")


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (a reader sees the old or the new file, never half)."""
    with atomic_path(path) as temporary:
        with open(temporary, "w") as handle:
            handle.write(text)
