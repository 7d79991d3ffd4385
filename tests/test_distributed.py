"""Distributed training on this machine: two tf.distribute workers on loopback
(``--distribute multiworker``), each decoding only its shard of an image folder, a
worker killed and restarted, and JAX's ``keras.distribution.DataParallel`` over two
host devices.

Every worker is a subprocess with a timeout, killed if the test fails; the
settings are tiny (depth 10, 8x8 digits or 10x10 images, 1-2 epochs). Most of the
time is process start-up and loopback collectives: the module took about 5 minutes
on the shared 2-core machine at load average ~7 (the worker-restart test about 2 of
them), and 11 minutes at load ~15; with the image-folder shard test (1 to 2.5
minutes alone), 6 min 45 s at load ~4.
"""

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from keras_densenet.apps import distribute, run_dir
from keras_densenet.apps import train as train_lib
from keras_densenet.apps.recipes import RECIPES

PER_REPLICA_BATCH = 8
WORKERS = 2
TINY_ARGS = ["--batch-size", str(PER_REPLICA_BATCH), "--image-size", "8", "--depth", "10",
             "--growth-rate", "8", "--no-augment", "--quiet"]
TINY = RECIPES["digits"].replace(
    model={**RECIPES["digits"].model, "depth": 10, "growth_rate": 8}, image_size=8,
    augment=False)
RUN_FILES = ["config.json", "curves.png", "log.csv", "metrics.json", "model.keras"]
TIMEOUT = 240  # seconds for one worker; a hung collective fails the test instead of CI
# Runs are compared on the final epoch's training accuracy (batch statistics,
# spread about +-0.05 between identical runs); the test accuracy, with the BN
# statistics recomputed before evaluation (apps/precise_bn.py), must be at least
# MIN_TEST_ACCURACY (chance is 0.1; with Keras' moving averages alone two tiny
# epochs gave 0.1-0.95).
TRAIN_ACCURACY_NOISE = 0.1
MIN_TEST_ACCURACY = 0.5


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    """``WORKERS`` processes of ``keras-densenet train --distribute multiworker``
    on loopback ports, each with its own ``TF_CONFIG``; logs under ``log_dir``."""

    def __init__(self, argv, log_dir, command=("-m", "keras_densenet.apps.cli", "train")):
        self.argv, self.log_dir, self.command = argv, log_dir, list(command)
        self.workers = [f"127.0.0.1:{port}" for port in _free_ports(WORKERS)]
        self.processes = [None] * WORKERS
        self.starts = [0] * WORKERS

    def start(self, index, extra_args=()):
        tf_config = {"cluster": {"worker": self.workers},
                     "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join(sys.path)}
        self.starts[index] += 1
        log = open(os.path.join(self.log_dir, f"worker{index}-start{self.starts[index]}.log"), "w")
        self.processes[index] = subprocess.Popen(
            [sys.executable, *self.command, "--distribute", "multiworker", *self.argv,
             *extra_args], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[index].log = log.name

    def wait(self, index, timeout=TIMEOUT):
        """Exit code of worker ``index`` and its output."""
        code = self.processes[index].wait(timeout=timeout)
        with open(self.processes[index].log) as handle:
            return code, handle.read()

    def kill_all(self):
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def _run_cluster(argv, log_dir, **cluster):
    """Run the ``WORKERS`` workers to the end; their outputs (each must exit 0)."""
    workers = Cluster(argv, log_dir, **cluster)
    try:
        for index in range(WORKERS):
            workers.start(index)
        results = [workers.wait(index) for index in range(WORKERS)]
    finally:  # on failure or timeout, no worker outlives the test
        workers.kill_all()
    for code, output in results:
        assert code == 0, output[-3000:]
    return [output for _, output in results]


def _log(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as handle:
        return list(csv.DictReader(handle))


def _test_accuracy(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        return json.load(handle)["test_accuracy"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-process run with the workers' global batch (16)."""
    run = str(tmp_path_factory.mktemp("single") / "run")
    train_lib.train(TINY.replace(epochs=2, batch_size=PER_REPLICA_BATCH * WORKERS), run,
                    verbose=0)
    return run


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """An uninterrupted two-worker run: ``(run directory, the workers' outputs)``."""
    logs = tmp_path_factory.mktemp("two_workers")
    run = str(logs / "run")
    return run, _run_cluster(["--output", run, "--epochs", "2", *TINY_ARGS], str(logs))


def _assert_like(run, other):
    """Same final training accuracy (log.csv) within noise; test accuracy well above chance."""
    assert float(_log(run)[-1]["accuracy"]) == pytest.approx(
        float(_log(other)[-1]["accuracy"]), abs=TRAIN_ACCURACY_NOISE)
    assert _test_accuracy(run) >= MIN_TEST_ACCURACY


def _optimizer_steps(run):
    import keras

    return int(keras.models.load_model(os.path.join(run, "model.keras")).optimizer.iterations)


TRAIN_IMAGES = 1257  # the digits' train split: 70% of 1,797 (10% validation, 20% test)
GLOBAL_STEPS_PER_EPOCH = -(-TRAIN_IMAGES // (PER_REPLICA_BATCH * WORKERS))


def test_two_loopback_workers_train_like_one_process(two_workers, reference):
    run, outputs = two_workers
    for index, output in enumerate(outputs):
        assert (f"tf.distribute multiworker: 2 replicas, global batch "
                f"{PER_REPLICA_BATCH * WORKERS} (worker{index})") in output
        assert "test accuracy" in output
    # Only the chief wrote the run files, once; the other worker's backup is gone.
    assert sorted(os.listdir(run)) == RUN_FILES
    assert [int(row["epoch"]) for row in _log(run)] == [0, 1]
    assert _optimizer_steps(run) == 2 * GLOBAL_STEPS_PER_EPOCH  # global batches
    _assert_like(run, reference)


# A worker that records the training files it decoded itself (its own marks, before
# DecodeFailures combines every worker's) in decoded-worker{N}.json.
RECORDING_WORKER = """
import json, os, sys
from keras_densenet.apps import cli, data
combined = data.DecodeCheck.failed
def failed(self, strategy=None):
    if strategy is not None:  # the training files
        task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        with open(os.path.join(os.environ["DECODED_DIR"], f"decoded-worker{task}.json"), "w") as f:
            json.dump(sorted(set(self.files) - set(combined(self))), f)
    return combined(self, strategy)
data.DecodeCheck.failed = failed
sys.exit(cli.main(["train", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_each_worker_decodes_only_its_shard_of_an_image_folder(tmp_path, monkeypatch):
    import numpy as np
    import tensorflow as tf

    from keras_densenet.apps import data as data_lib

    rng = np.random.default_rng(0)
    # 18 training files, one broken: shards of 9 and 9, 8 and 9 images, so with batches
    # of 8 per replica one worker has no batch for the last step (tf.distribute hands
    # it an empty one)
    for split, counts in (("train", (9, 8)), ("val", (2, 2))):
        for name, count in zip(("dark", "light"), counts):
            os.makedirs(tmp_path / split / name)
            for i in range(count):
                pixels = rng.normal(60 if name == "dark" else 190, 20, (10, 10, 3))
                tf.io.write_file(str(tmp_path / split / name / f"{i}.png"),
                                 tf.io.encode_png(np.clip(pixels, 0, 255).astype("uint8")))
    broken = tmp_path / "train" / "dark" / "broken.jpg"  # passes the byte checks only
    broken.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200) + b"\xff\xd9")
    monkeypatch.setenv("DECODED_DIR", str(tmp_path))
    run = str(tmp_path / "run")
    outputs = _run_cluster(["--data", str(tmp_path / "train"), "--val-data",
                            str(tmp_path / "val"), "--output", run, "--epochs", "1", *TINY_ARGS],
                           str(tmp_path), command=("-c", RECORDING_WORKER))
    decoded = []
    for index in range(WORKERS):
        with open(tmp_path / f"decoded-worker{index}.json") as handle:
            decoded.append(set(json.load(handle)))
    # worker i: every other file of the shuffled training list from the i-th
    order = data_lib.load(str(tmp_path / "train"), 8, 8, val_dataset=str(tmp_path / "val"),
                          augment=False).decode_checks["train"].files
    assert len(order) == 18
    for index in range(WORKERS):
        assert decoded[index] == set(order[index::WORKERS]) - {str(broken)}
    line = ("1 image files failed to decode and were skipped (metrics.json lists them): "
            f"{str(broken)!r}")
    assert all(line in output for output in outputs)  # both workers combined their marks
    with open(os.path.join(run, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["failed_images"] == [str(broken)] and metrics["images"]["train"] == 18
    assert _optimizer_steps(run) == 2  # the longer shard's steps: ceil(9 / 8)
    assert math.isfinite(metrics["test_loss"]) and math.isfinite(float(_log(run)[0]["loss"]))


def _wait_for(condition, what, workers, timeout=TIMEOUT):
    """Poll ``condition`` while every worker runs; fail on a timeout or an early exit."""
    deadline = time.monotonic() + timeout
    while not condition():
        exited = [i for i, p in enumerate(workers.processes) if p.poll() is not None]
        if exited:
            raise AssertionError(f"worker {exited[0]} exited before {what}: "
                                 f"{workers.wait(exited[0])[1][-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.2)


def test_a_killed_worker_restarts_from_the_last_backup(tmp_path, two_workers):
    """Worker 1 killed mid-epoch; every worker restarted with --resume, in "full" mode."""
    run = str(tmp_path / "run")
    workers = Cluster(["--output", run, "--epochs", "2", *TINY_ARGS], str(tmp_path))
    try:
        for index in range(WORKERS):
            workers.start(index)
        # Epoch 0 is logged by the chief and backed up by worker 1: kill worker 1
        # a moment into epoch 1.
        _wait_for(lambda: os.path.exists(os.path.join(run, "backup-worker1",
                                                      "training_metadata.json"))
                  and len(_log(run) if os.path.exists(os.path.join(run, "log.csv")) else []) == 1,
                  "the end of epoch 0", workers)
        time.sleep(1)
        workers.processes[1].send_signal(signal.SIGKILL)
        # tf.distribute: the surviving worker's collectives abort (connection
        # reset, or the dead one's heartbeats stop), so it fails too and is
        # restarted as well.
        code, output = workers.wait(0)
        assert code != 0 and "Collective ops is aborted" in output, output[-3000:]
        assert [int(row["epoch"]) for row in _log(run)] == [0]  # killed mid-epoch 1
        # Restarted in another memory mode: each worker's backup, written in the plain
        # model's variable order, loads into the "full" model (DenseNetModel.load_weights).
        for index in range(WORKERS):
            workers.start(index, ["--resume", "--memory-efficient", "full"])
        results = [workers.wait(index) for index in range(WORKERS)]
    finally:
        workers.kill_all()
    for code, output in results:
        assert code == 0, output[-3000:]
    assert sorted(os.listdir(run)) == RUN_FILES
    assert [int(row["epoch"]) for row in _log(run)] == [0, 1]  # epoch 0 not repeated
    assert _optimizer_steps(run) == 2 * GLOBAL_STEPS_PER_EPOCH
    assert run_dir.read_run_config(run)["recipe"]["model"]["memory_efficient"] == "full"
    _assert_like(run, two_workers[0])


def test_jax_data_parallel_on_two_host_devices(tmp_path, reference):
    run = str(tmp_path / "run")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-m", "keras_densenet.apps.cli", "train", "--distribute", "data-parallel",
         "--output", run, "--epochs", "2", *TINY_ARGS],
        capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert (f"keras.distribution data-parallel: 2 replicas, global batch "
            f"{PER_REPLICA_BATCH * WORKERS}") in result.stdout
    assert sorted(os.listdir(run)) == RUN_FILES
    assert [int(row["epoch"]) for row in _log(run)] == [0, 1]
    _assert_like(run, reference)


def test_the_engine_must_fit_the_backend():
    with pytest.raises(ValueError, match="data-parallel uses keras.distribution, which needs "
                                         "the JAX backend"):
        distribute.distribution_strategy("data-parallel")
    with pytest.raises(ValueError, match="distribute must be one of"):
        distribute.keras_distribution("horovod")


def test_worker_roles_come_from_tf_config(monkeypatch):
    def role(cluster, task_type, index):
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": cluster, "task": {"type": task_type, "index": index}}))
        return distribute.worker_role("multiworker")

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert role(workers, "worker", 0) == distribute.Worker(chief=True, name="worker0")
    assert role(workers, "worker", 1) == distribute.Worker(chief=False, name="worker1")
    with_chief = {"chief": ["127.0.0.1:3"], **workers}
    assert role(with_chief, "chief", 0).chief and not role(with_chief, "worker", 0).chief
    assert distribute.worker_role("mirrored") == distribute.Worker()
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        distribute.worker_role("multiworker")


def test_a_restarted_non_chief_needs_resume(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
         "task": {"type": "worker", "index": 1}}))
    os.makedirs(tmp_path / "run" / "backup-worker1")
    with pytest.raises(ValueError, match="backup-worker1' holds an interrupted run: pass --resume"):
        train_lib.train(TINY, str(tmp_path / "run"), distribute="multiworker", verbose=0)


def test_drop_remainder_keeps_only_full_batches():
    from keras_densenet.apps import data as data_lib

    splits = data_lib.load("digits", 8, 16, drop_remainder=True)
    sizes = {int(x.shape[0]) for split in (splits.train, splits.test) for x, _ in split}
    assert sizes == {16}


def test_imagenet_train_pipeline_crops_flips_and_normalizes(tmp_path):
    import numpy as np
    import tensorflow as tf

    from keras_densenet.apps import data as data_lib

    rng = np.random.default_rng(0)
    for name, fmt in (("a", "jpg"), ("b", "png")):  # JPEG: crop-window decode; PNG: whole
        os.makedirs(tmp_path / name)
        for i in range(3):
            image = rng.integers(0, 256, size=(40 + 10 * i, 50, 3)).astype("uint8")
            encode = tf.io.encode_jpeg if fmt == "jpg" else tf.io.encode_png
            tf.io.write_file(str(tmp_path / name / f"{i}.{fmt}"), encode(image))
    files, labels, names, skipped = data_lib.image_folder_files(str(tmp_path))
    assert names == ["a", "b"] and labels.tolist() == [0, 0, 0, 1, 1, 1] and skipped == []
    for options in (dict(parallel=False), dict(parallel=True, cache=True)):
        dataset = data_lib.imagenet_train_pipeline(files, labels, 16, 4, **options)
        for _ in range(2):  # the cached second epoch too
            batches = list(dataset)
            assert [tuple(x.shape) for x, _ in batches] == [(4, 16, 16, 3), (2, 16, 16, 3)]
            images = np.concatenate([x for x, _ in batches])
            assert sorted(np.concatenate([y for _, y in batches]).tolist()) == labels.tolist()
            # normalized like preprocess_input(mode="torch"): [0, 255] -> about [-2.2, 2.7]
            assert -2.2 < images.min() < -1.5 and 2.0 < images.max() < 2.7
