"""RDNet-Tiny: ours (Keras 3) against timm's own, inference and a training step, side by side.

    python benchmarks/rdnet.py                     # batch 8 at 224 px, 1 round
    python benchmarks/rdnet.py --batch 4 --size 160 --steps 3   # quicker
    python benchmarks/rdnet.py --out rdnet_epyc_zen3.csv         # another file name

Training is measured for ours in each ``memory_efficient`` mode (``False``,
``True``, ``"full"``) and for timm; inference for ours (plain) and timm.

Every (implementation, task) runs in a fresh process, the implementations
alternating within each round, so that both see the same machine load and
each peak RSS is its own. Ours runs on the Keras backend in KERAS_BACKEND
(default TensorFlow) through ``predict_on_batch`` / ``train_on_batch`` as
compiled by ``model.compile`` (its ``jit_compile`` is recorded); timm's runs
in PyTorch eager mode (``torch.inference_mode`` for inference). Training is
SGD with momentum 0.9 on sparse cross entropy, random images and labels. One
warm-up step (tracing, allocator pools), then ``--steps`` timed ones: the
median wall time per step, process CPU seconds per step (all threads), peak RSS
and the RSS the steps added to the built model ("added MB"). Writes
benchmarks/results/rdnet.csv (or ``--out``).
"""

import argparse
import json
import os
import subprocess
import sys

from common import write_csv

WORKER = r"""
import json, os, resource, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
implementation, task, size, batch, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
memory_efficient = {"False": False, "True": True, "full": "full", "None": None}[sys.argv[6]]
import numpy as np
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
rng = np.random.default_rng(0)
images = rng.normal(size=(batch, 3, size, size)).astype("float32")
labels = rng.integers(0, 1000, batch)
if implementation == "timm":
    import torch
    import keras_densenet
    sys.path.insert(0, os.path.join(os.path.dirname(keras_densenet.__file__), "..", "tests"))
    from timm_import import import_timm  # timm beside a torchvision that does not load
    model = import_timm().create_model("rdnet_tiny", pretrained=False)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    if task == "training":
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        def step():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    else:
        model.eval()
        def step():
            with torch.inference_mode():
                model(x)
    backend, jit = "torch (eager)", False
else:
    import keras
    from keras_densenet.rdnet import RDNetTiny
    model = RDNetTiny(input_shape=(size, size, 3), memory_efficient=memory_efficient)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = images.transpose(0, 2, 3, 1).copy()
    step = ((lambda: model.train_on_batch(x, labels)) if task == "training"
            else (lambda: model.predict_on_batch(x)))
    backend, jit = keras.backend.backend(), model.jit_compile
built = rss_mb()
step()  # warm-up
times, start_cpu = [], time.process_time()
for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
cpu = (time.process_time() - start_cpu) / steps
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(backend=backend, jit_compile=jit, step_s=round(float(np.median(times)), 3),
                      step_cpu_s=round(cpu, 3), peak_mb=round(peak),
                      added_mb=round(peak - built))))
"""

CONFIGURATIONS = {"inference": (("keras_densenet", False), ("timm", None)),
                  "training": (("keras_densenet", False), ("keras_densenet", True),
                               ("keras_densenet", "full"), ("timm", None))}
"""Per task, the (implementation, memory_efficient) pairs measured."""


def measure(implementation, memory_efficient, task, size, batch, steps):
    """One fresh process's row: backend, jit_compile, step_s, step_cpu_s, peak_mb, added_mb,
    and the 1-minute load average before and after it."""
    load = round(os.getloadavg()[0], 2)
    result = subprocess.run([sys.executable, "-c", WORKER, implementation, task, str(size),
                             str(batch), str(steps), str(memory_efficient)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{implementation} {task} failed:\n{result.stderr[-3000:]}")
    return dict(implementation=implementation,
                memory_efficient="" if memory_efficient is None else memory_efficient, task=task,
                size=size, batch=batch, steps=steps,
                **json.loads(result.stdout.strip().splitlines()[-1]), load_1min=load,
                load_1min_after=round(os.getloadavg()[0], 2))


def cpu_name():
    """The CPU's model name and core count, from /proc/cpuinfo (Linux)."""
    with open("/proc/cpuinfo") as handle:
        names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    return f"{names[0] if names else 'unknown'} ({os.cpu_count()} cores)"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up")
    parser.add_argument("--rounds", type=int, default=1, help="repeats of every configuration")
    parser.add_argument("--out", default="rdnet.csv", help="file name in benchmarks/results/")
    args = parser.parse_args()
    cpu = cpu_name()
    rows = []
    for round_index in range(args.rounds):
        for task, configurations in CONFIGURATIONS.items():
            order = configurations if round_index % 2 == 0 else configurations[::-1]
            for implementation, memory_efficient in order:
                rows.append(dict(round=round_index, **measure(
                    implementation, memory_efficient, task, args.size, args.batch, args.steps),
                    cpu=cpu))
                print(rows[-1], flush=True)
    print(write_csv(args.out, rows))


if __name__ == "__main__":
    main()
