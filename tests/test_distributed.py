"""Distributed training on this machine: two tf.distribute workers on loopback
(``--distribute multiworker``), a worker killed and restarted, and JAX's
``keras.distribution.DataParallel`` over two host devices.

Every worker is a subprocess with a timeout, killed if the test fails; the
settings are tiny (depth 10, 8x8 digits, 2-3 epochs) so that the module runs
in about two minutes on 2 cores.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from keras_densenet import train as train_lib
from keras_densenet.recipes import RECIPES

PER_REPLICA_BATCH = 8
WORKERS = 2
TINY_ARGS = ["--batch-size", str(PER_REPLICA_BATCH), "--image-size", "8", "--depth", "10",
             "--growth-rate", "8", "--no-augment", "--quiet"]
TINY = RECIPES["digits"].replace(
    model={**RECIPES["digits"].model, "depth": 10, "growth_rate": 8}, image_size=8,
    augment=False)
RUN_FILES = ["config.json", "curves.png", "log.csv", "metrics.json", "model.keras"]
TIMEOUT = 240  # seconds for one worker; a hung collective fails the test instead of CI
# Test-accuracy spread of this tiny setting over repeated single-process runs
# (BN statistics after two epochs) is about +-0.1; the final-epoch training
# accuracy is steadier.
TEST_ACCURACY_NOISE = 0.25
TRAIN_ACCURACY_NOISE = 0.1


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

    def __init__(self, argv, log_dir):
        self.argv, self.log_dir = argv, log_dir
        self.workers = [f"127.0.0.1:{port}" for port in _free_ports(WORKERS)]
        self.processes = [None] * WORKERS
        self.starts = 0

    def start(self, index, extra_args=()):
        tf_config = {"cluster": {"worker": self.workers},
                     "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join(sys.path)}
        self.starts += 1
        log = open(os.path.join(self.log_dir, f"worker{index}-{self.starts}.log"), "w")
        self.processes[index] = subprocess.Popen(
            [sys.executable, "-m", "keras_densenet.cli", "train", "--distribute", "multiworker",
             *self.argv, *extra_args], env=env, stdout=log, stderr=subprocess.STDOUT)
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


@pytest.fixture
def cluster(tmp_path):
    clusters = []

    def make(argv):
        clusters.append(Cluster(argv, str(tmp_path)))
        return clusters[-1]

    yield make
    for c in clusters:  # on failure or timeout, no worker outlives the test
        c.kill_all()


def _run_cluster(cluster, argv, extra_args=()):
    workers = cluster(argv)
    for index in range(WORKERS):
        workers.start(index, extra_args)
    results = [workers.wait(index) for index in range(WORKERS)]
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


def test_two_loopback_workers_train_like_one_process(cluster, tmp_path, reference):
    run = str(tmp_path / "run")
    outputs = _run_cluster(cluster, ["--output", run, "--epochs", "2", *TINY_ARGS])
    for index, output in enumerate(outputs):
        assert (f"tf.distribute multiworker: 2 replicas, global batch "
                f"{PER_REPLICA_BATCH * WORKERS} (worker{index})") in output
        assert "test accuracy" in output
    # Only the chief wrote the run files, once; the other worker's backup is gone.
    assert sorted(os.listdir(run)) == RUN_FILES
    log = _log(run)
    assert [int(row["epoch"]) for row in log] == [0, 1]
    steps = -(-int(0.8 * 1797) // (PER_REPLICA_BATCH * WORKERS))
    import keras

    model = keras.models.load_model(os.path.join(run, "model.keras"))
    assert int(model.optimizer.iterations) == 2 * steps  # global batches, not per worker
    single_log = _log(reference)
    assert float(log[-1]["accuracy"]) == pytest.approx(
        float(single_log[-1]["accuracy"]), abs=TRAIN_ACCURACY_NOISE)
    assert _test_accuracy(run) == pytest.approx(_test_accuracy(reference),
                                                abs=TEST_ACCURACY_NOISE)
