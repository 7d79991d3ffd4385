"""DenseNet121 (224px) on each Keras backend and data format: inference images/s, training step.

    python benchmarks/backends.py              # batch 1 and 32 inference, batch 16 training
    python benchmarks/backends.py --quick      # smaller batches
    python benchmarks/backends.py --no-train   # inference only (a busy machine)

Each backend and data format runs in its own process (Keras fixes the backend
at import) with the same random weights; the table gives ratios against
TensorFlow channels_last, and each row records the load average. TensorFlow
has no channels_first convolution on CPU, so that row is reported as failed.
Writes benchmarks/results/backends.csv.
"""

import argparse
import json
import os
import subprocess
import sys

from common import write_csv


WORKER = r"""
import json, os, statistics, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, numpy as np
from keras_densenet import DenseNetImageNet121
infer_batches, train_batch, repeats = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
data_format = sys.argv[4]
shape = (224, 224, 3) if data_format == "channels_last" else (3, 224, 224)
keras.utils.set_random_seed(0)
model = DenseNetImageNet121(input_shape=shape, data_format=data_format)
result = {}
def median_time(step):
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
    return statistics.median(times)
for batch in infer_batches:
    x = np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32")
    result[f"infer_b{batch}_img_s"] = round(batch / median_time(lambda: model.predict_on_batch(x)), 2)
if not train_batch:
    print(json.dumps(result)); sys.exit()
model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(train_batch, *shape)).astype("float32")
y = np.arange(train_batch) % 1000
result[f"train_b{train_batch}_step_s"] = round(median_time(lambda: model.train_on_batch(x, y)), 3)
print(json.dumps(result))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("--repeats", type=int, help="timed runs (default 3, quick 2)")
    parser.add_argument("--backends", nargs="+", choices=("tensorflow", "jax", "torch"),
                        default=["tensorflow", "jax", "torch"])
    args = parser.parse_args()
    infer, train, repeats = ([1, 4], 4, 2) if args.quick else ([1, 32], 16, 3)
    repeats = args.repeats or repeats
    train = 0 if args.no_train else train
    rows = []
    for backend in args.backends:
        for data_format in ("channels_last", "channels_first"):
            result = subprocess.run([sys.executable, "-c", WORKER, json.dumps(infer), str(train),
                                     str(repeats), data_format], capture_output=True, text=True,
                                    env={**os.environ, "KERAS_BACKEND": backend})
            if result.returncode:
                print(f"{backend} {data_format}: failed: {result.stderr.strip().splitlines()[-1]}",
                      flush=True)
                continue
            rows.append(dict(backend=backend, data_format=data_format,
                             **json.loads(result.stdout.strip().splitlines()[-1]),
                             load_average=round(os.getloadavg()[0], 1)))
            print(rows[-1], flush=True)
    reference = rows[0]
    keys = [k for k in reference if k not in ("backend", "data_format", "load_average")]
    print(f"\n{'backend':<27}" + "".join(f"{k:>22}" for k in keys))
    for row in rows:
        cells = []
        for key in keys:
            ratio = (row[key] / reference[key] if "img_s" in key else reference[key] / row[key])
            cells.append(f"{row[key]} ({ratio:.2f}x)")
        print(f"{row['backend'] + ' ' + row['data_format']:<27}" + "".join(f"{c:>22}" for c in cells))
    print(f"(ratios: speed relative to {reference['backend']} {reference['data_format']}, "
          "higher is faster)")
    write_csv("backends.csv", rows)


if __name__ == "__main__":
    main()
