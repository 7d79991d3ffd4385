"""Training step time under ``--precision``: ours and keras.applications, DenseNet-121.

    python benchmarks/train_step.py             # batch 16, 224 px, 5 timed steps each
    python benchmarks/train_step.py --quick     # 32 px, 1 step: to check that it runs

Each configuration runs in a fresh process (in turn, in the same run, so that
they share the machine's state): keras.applications' DenseNet121 in float32
(the reference) and under ``mixed_bfloat16``, ours (``DenseNetImageNet121``)
with ``memory_efficient`` False and ``"full"`` under ``mixed_bfloat16`` and
False in float32. One warm-up step (tracing), then timed steps of SGD with
momentum on random data. Appends to benchmarks/results/train_step.csv (the
rows of earlier runs are kept; ``run_started`` tells runs apart) the wall
seconds per step, each row's speed-up over the run's float32 reference, the
1-minute load average when the row started and the CPU's bfloat16 flags. On a
shared machine step times vary between runs: compare rows of one run.
"""

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import RESULTS, write_csv  # noqa: E402

WORKER = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
kind, policy, mode, size, batch, steps = sys.argv[1:7]
size, batch, steps, mode = int(size), int(batch), int(steps), json.loads(mode)
import keras, numpy as np
keras.config.set_dtype_policy(policy)
if kind == "keras.applications":
    model = keras.applications.DenseNet121(weights=None, input_shape=(size, size, 3))
else:
    import keras_densenet
    model = keras_densenet.DenseNetImageNet121(input_shape=(size, size, 3),
                                               memory_efficient=mode)
model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
y = np.arange(batch) % 1000
model.train_on_batch(x, y)  # warm-up: tracing
start = time.perf_counter()
for _ in range(steps):
    model.train_on_batch(x, y)
print(json.dumps(dict(step_s=round((time.perf_counter() - start) / steps, 3))))
"""
CONFIGS = [  # (kind, dtype policy, memory_efficient)
    ("keras.applications", "float32", False),
    ("keras.applications", "mixed_bfloat16", False),
    ("ours", "float32", False),
    ("ours", "mixed_bfloat16", False),
    ("ours", "mixed_bfloat16", "full"),
]


def cpu_flags():
    from keras_densenet.apps.precision import CPU_BF16_FLAGS

    with open("/proc/cpuinfo") as handle:
        flags = next(line for line in handle if line.startswith("flags")).split()
    return " ".join(f for f in CPU_BF16_FLAGS if f in flags) or "none"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size, batch, steps = (32, 2, 1) if args.quick else (224, 16, 5)
    name = "train_step_quick.csv" if args.quick else "train_step.csv"
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for kind, policy, mode in CONFIGS:
        load = round(os.getloadavg()[0], 2)
        result = subprocess.run([sys.executable, "-c", WORKER, kind, policy, json.dumps(mode),
                                 str(size), str(batch), str(steps)],
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"{kind} {policy} failed:\n{result.stderr[-2000:]}")
        step = json.loads(result.stdout.strip().splitlines()[-1])["step_s"]
        rows.append(dict(run_started=started, model=kind, policy=policy, memory_efficient=mode, image_size=size,
                         batch=batch, step_s=step, load_1min=load, cpu_bf16=cpu_flags()))
        print(rows[-1], flush=True)
    reference = rows[0]["step_s"]
    for row in rows:
        row["speedup_vs_reference_float32"] = round(reference / row["step_s"], 2)
    earlier = []
    if os.path.exists(os.path.join(RESULTS, name)):
        with open(os.path.join(RESULTS, name), newline="") as handle:
            earlier = list(csv.DictReader(handle))
    print(write_csv(name, earlier + rows))


if __name__ == "__main__":
    main()
