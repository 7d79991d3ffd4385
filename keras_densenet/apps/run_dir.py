"""The run directory of ``keras-densenet train``: checked, created, resumed, never overwritten.

A run directory holds ``config.json`` (``{"recipe": ..., "class_names": ...}``),
``backup/`` (the state saved after every epoch, removed once the run
completes), ``log.csv``, ``curves.png``, ``model.keras`` and ``metrics.json``.
This module imports no framework.
"""

import csv
import dataclasses
import io
import json
import os
import shutil

from keras_densenet.apps.recipes import Recipe
from keras_densenet.utils import write_text

RUN_FILES = ("backup", "log.csv", "model.keras", "metrics.json", "curves.png")
"""What a run writes besides ``config.json``; a new run refuses a folder holding any."""


def check_output_dir(output_dir):
    """A one-line ``ValueError`` when ``output_dir`` cannot be a run directory."""
    path = os.path.abspath(output_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output {output_dir!r} is a file, not a directory.")
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ValueError(f"--output {output_dir!r} cannot be created: {path!r} is a file.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--output {output_dir!r} cannot be written: no write permission "
                         f"in {path!r}.")


def check_run_dir(output_dir, resume):
    """A one-line ``ValueError`` when ``resume`` finds no run, or a new run finds one."""
    exists = os.path.exists(os.path.join(output_dir, "config.json"))
    if resume and not exists:
        raise ValueError(f"--resume: {output_dir!r} holds no run to resume (no config.json).")
    if not resume and exists:
        raise ValueError(f"{output_dir!r} already holds a run: pass --resume to continue it, "
                         "or choose another --output.")


def run_memory_mode(config):
    """The ``memory_efficient`` of a run's config (``False`` where the recipe has none)."""
    return config["recipe"]["model"].get("memory_efficient", False)


def prepare_run_dir(output_dir, config, resume):
    """Check the run directory; create it and its ``config.json`` for a new run.

    Returns the memory mode a resumed run started in when ``config`` asks for
    another (the only change ``--resume`` takes), else ``None``. A recipe field
    that the run's ``config.json`` lacks (written by an earlier version) counts
    as that field's default.
    """
    config_path = os.path.join(output_dir, "config.json")
    check_run_dir(output_dir, resume)
    if resume:
        saved = read_run_config(output_dir)
        saved["recipe"] = dataclasses.asdict(Recipe.from_dict(saved["recipe"]))
        saved, current = (json.loads(json.dumps(run)) for run in (saved, config))  # as in the file
        started_in = run_memory_mode(saved)
        for run in (saved, current):
            run["recipe"]["model"].pop("memory_efficient", None)
        if saved != current:
            differences = sorted(key for key, value in current["recipe"].items()
                                 if saved["recipe"].get(key) != value) or ["class_names"]
            raise ValueError(
                f"--resume: the run in {output_dir!r} was made with another recipe or data "
                f"(differs in {differences}); its checkpoint does not fit "
                "this model. Resume without those options (config.json has the run's), "
                "or train into a new --output.")
        if (os.path.exists(os.path.join(output_dir, "model.keras"))
                and not os.path.exists(os.path.join(output_dir, "backup"))):
            raise ValueError(f"--resume: the run in {output_dir!r} has already finished "
                             "(model.keras is written); train into a new --output.")
        return None if started_in == run_memory_mode(config) else started_in
    if any(os.path.exists(os.path.join(output_dir, name)) for name in RUN_FILES):
        raise ValueError(f"{output_dir!r} already holds a run: pass --resume to continue it, "
                         "or choose another --output.")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"--output {output_dir!r} cannot be created: {error.strerror}.") from None
    write_text(config_path, json.dumps(config, indent=2))
    return None


def read_run_config(output_dir):
    """The ``config.json`` of the run in ``output_dir``: ``{"recipe": ..., "class_names": ...}``."""
    config_path = os.path.join(output_dir, "config.json")
    if not os.path.exists(config_path):
        raise ValueError(f"--resume: {output_dir!r} holds no run to resume (no config.json).")
    try:
        with open(config_path) as handle:
            return json.load(handle)
    except ValueError as error:
        raise ValueError(f"--resume: {config_path!r} is not valid JSON ({error}).") from None


def restorable_epoch(backup_dir):
    """The epoch ``BackupAndRestore`` will resume from (0: none), repairing a half-written backup.

    A kill while Keras writes ``training_metadata.json`` leaves it empty or cut;
    the previous state (``.bkp``, kept by ``double_checkpoint``) then replaces
    the pair, or, if there is none, the backup is dropped (the run restarts).
    """
    metadata_path = os.path.join(backup_dir, "training_metadata.json")
    weights_path = os.path.join(backup_dir, "latest.weights.h5")

    def epoch(path):
        try:
            with open(path) as handle:
                return int(json.load(handle)["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    if not os.path.exists(metadata_path):
        return 0
    if epoch(metadata_path) is not None:
        return epoch(metadata_path)
    previous = epoch(metadata_path + ".bkp")
    if previous is not None and os.path.exists(weights_path + ".bkp"):
        shutil.copyfile(weights_path + ".bkp", weights_path)
        shutil.copyfile(metadata_path + ".bkp", metadata_path)
        return previous
    shutil.rmtree(backup_dir)
    return 0


def trim_log(log_path, epochs_done):
    """Drop the rows of ``log.csv`` for epochs from ``epochs_done`` on (they will be redone)."""
    if not os.path.exists(log_path):
        return
    with open(log_path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if row and int(row[0]) < epochs_done]
    if len(kept) != len(body):
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([header, *kept])
        write_text(log_path, text.getvalue())
