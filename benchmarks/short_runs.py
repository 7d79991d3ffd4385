"""Short training runs, as a user starts them: is the saved model as good as training said?

    python benchmarks/short_runs.py                 # every case below
    python benchmarks/short_runs.py --case squares  # one of them

Cases, each through the ``keras-densenet`` command in a fresh process:

* ``squares``: a folder of 3 classes of solid squares (each image all red,
  green or blue, its shade varied by up to +-40 per channel; 40 images each,
  32 px), ``train --data DIR --epochs 10``: test accuracy (metrics.json).
* ``digits3``: ``train --epochs 3`` (the digits recipe), then ``classify`` 40
  digit PNGs of the test split: the share classified right.
* ``digits``: the default digits run (12 epochs): validation accuracy of each
  epoch (log.csv) and the test accuracy.
* ``digits-bf16``: the same with ``--precision bf16``.

Writes benchmarks/results/short_runs.csv (one row per case: the numbers above,
the run's wall time, the CPU; rows of the cases not run are kept).
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import RESULTS, write_csv  # noqa: E402

CASES = ("squares", "digits3", "digits", "digits-bf16")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def cli(*args):
    """Run ``keras-densenet ARGS``; its stdout (fails loudly on a non-zero exit)."""
    result = subprocess.run([sys.executable, "-m", "keras_densenet.apps.cli", *args],
                            capture_output=True, text=True)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"keras-densenet {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def write_squares(folder, per_class=40, size=32, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        os.makedirs(os.path.join(folder, name))
        for i in range(per_class):
            shade = np.clip(np.array(colour) + rng.integers(-40, 41, 3), 0, 255)
            image = np.broadcast_to(shade, (size, size, 3)).astype("uint8")
            Image.fromarray(image).save(os.path.join(folder, name, f"{i}.png"))


def metrics(run):
    with open(os.path.join(run, "metrics.json")) as handle:
        return json.load(handle)


def validation_curve(run):
    with open(os.path.join(run, "log.csv")) as handle:
        return " ".join(f"{float(row['val_accuracy']):.3f}" for row in csv.DictReader(handle))


def run_case(case, work):
    run = os.path.join(work, case)
    started = time.perf_counter()
    if case == "squares":
        folder = os.path.join(work, "squares-data")
        write_squares(folder)
        cli("train", "--data", folder, "--epochs", "10", "--output", run, "--quiet")
        return dict(test_accuracy=metrics(run)["test_accuracy"],
                    validation_accuracy=validation_curve(run),
                    seconds=round(time.perf_counter() - started))
    if case == "digits3":
        cli("train", "--epochs", "3", "--output", run, "--quiet")
        from keras_densenet.apps.data import digits
        from PIL import Image

        *_, (x_test, y_test), _ = digits(32)
        pngs = os.path.join(work, "digit-pngs")
        os.makedirs(pngs)
        for i in range(40):
            Image.fromarray(x_test[i].astype("uint8")).save(
                os.path.join(pngs, f"{i:02d}_{y_test[i]}.png"))
        lines = cli("classify", pngs, "--model", os.path.join(run, "model.keras"), "--json",
                    "--top", "1").splitlines()
        right = 0
        for line in lines:
            result = json.loads(line)
            truth = os.path.basename(result["path"]).split("_")[1].split(".")[0]
            right += result["top"][0]["label"] == truth
        return dict(test_accuracy=metrics(run)["test_accuracy"], classified_right=right / 40,
                    validation_accuracy=validation_curve(run),
                    seconds=round(time.perf_counter() - started))
    precision = ["--precision", "bf16"] if case == "digits-bf16" else []
    cli("train", *precision, "--output", run, "--quiet")
    return dict(test_accuracy=metrics(run)["test_accuracy"],
                validation_accuracy=validation_curve(run),
                seconds=round(time.perf_counter() - started))


def cpu_name():
    with open("/proc/cpuinfo") as handle:
        names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    return f"{names[0]} x{len(names)}" if names else platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=CASES, action="append",
                        help="run only this case (repeatable; default: all)")
    args = parser.parse_args()
    cases = args.case or CASES
    path = os.path.join(RESULTS, "short_runs.csv")
    rows = []
    if os.path.exists(path):
        with open(path, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["case"] not in cases]
    with tempfile.TemporaryDirectory() as work:
        for case in cases:
            row = dict(case=case, **run_case(case, work), cpu=cpu_name())
            print(row, flush=True)
            rows.append(row)
    print(write_csv("short_runs.csv", rows))


if __name__ == "__main__":
    main()
