"""Training memory and step time: memory_efficient vs plain vs keras.applications.

    python benchmarks/memory.py           # DenseNet121 b16 224px; DenseNet-BC k=12 depths 40/100/190/250, 32px b64
    python benchmarks/memory.py --quick   # smaller: to check that it runs

Each configuration trains in a fresh process (so that peak RSS is its own):
one warm-up step (tracing), then timed steps on random data. "training MB" is
the peak RSS minus the RSS after the model was built and compiled. Prints a
table with ratios against keras.applications.DenseNet121 and least-squares fits
of training memory against depth (linear and quadratic: how much of the memory
the depth^2 term explains), and writes benchmarks/results/memory.csv and memory.png.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from common import RESULTS, write_csv


WORKER = r"""
import json, os, resource, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, numpy as np
kind, depth, size, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
from keras_densenet import DenseNet, DenseNetImageNet121
if kind == "keras.applications":
    model = keras.applications.DenseNet121(weights=None, input_shape=(size, size, 3))
elif depth == 121:
    model = DenseNetImageNet121(input_shape=(size, size, 3), memory_efficient=kind == "efficient")
else:
    model = DenseNet(depth=depth, growth_rate=12, bottleneck=True, reduction=0.5,
                     input_shape=(size, size, 3), classes=10, memory_efficient=kind == "efficient")
classes = model.output.shape[-1]
model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
y = np.arange(batch) % classes
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
built = rss_mb()
model.train_on_batch(x, y)  # warm-up: tracing
start = time.perf_counter()
for _ in range(steps):
    model.train_on_batch(x, y)
step = (time.perf_counter() - start) / steps
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(peak_mb=round(peak), training_mb=round(peak - built), step_s=round(step, 3))))
"""


def measure(kind, depth, size, batch, steps):
    result = subprocess.run([sys.executable, "-c", WORKER, kind, str(depth), str(size),
                             str(batch), str(steps)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{kind} depth {depth} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def depth_fits(depths, values):
    """Fits of memory against depth: ``(linear_r2, quadratic_coefficients, quadratic_share)``.

    ``linear_r2``: R^2 of the least-squares line (1.0: growth is exactly linear);
    ``quadratic_coefficients``: of ``a*L^2 + b*L + c``; ``quadratic_share``: the
    ``a*L^2`` term's share of the fitted memory at the largest depth.
    """
    depths, values = np.asarray(depths, dtype=float), np.asarray(values, dtype=float)
    residuals = values - np.polyval(np.polyfit(depths, values, 1), depths)
    linear_r2 = 1.0 - (residuals**2).sum() / ((values - values.mean()) ** 2).sum()
    quadratic = np.polyfit(depths, values, 2)
    share = quadratic[0] * depths[-1] ** 2 / np.polyval(quadratic, depths[-1])
    return linear_r2, quadratic, share


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, help="DenseNet121 batch (default 16)")
    parser.add_argument("--size", type=int, help="DenseNet121 image size (default 224)")
    args = parser.parse_args()
    size, batch = (args.size or (112 if args.quick else 224)), (args.batch or (8 if args.quick else 16))
    depths = (16, 40, 64, 100) if args.quick else (40, 100, 190, 250)
    steps = 2 if args.quick else 3

    rows = []
    for kind in ("keras.applications", "plain", "efficient"):
        rows.append(dict(model=f"DenseNet121 {kind}", kind=kind, depth=121,
                         **measure(kind, 121, size, batch, steps)))
        print(rows[-1], flush=True)
    for depth in depths:
        for kind in ("plain", "efficient"):
            rows.append(dict(model=f"DenseNet-BC-{depth} k=12 {kind}", kind=kind, depth=depth,
                             **measure(kind, depth, 32, 64, steps)))
            print(rows[-1], flush=True)

    reference = rows[0]
    print(f"\nDenseNet121, batch {batch}, {size}px; DenseNet-BC (k=12), batch 64, 32px")
    print(f"{'model':<36}{'peak MB':>9}{'train MB':>10}{'step s':>8}{'peak/ref':>10}"
          f"{'train/ref':>10}{'time/ref':>10}")
    for row in rows:
        ratios = ("", "", "")
        if row["depth"] == 121:
            ratios = tuple(f"{row[k] / reference[k]:.2f}x" for k in ("peak_mb", "training_mb", "step_s"))
        print(f"{row['model']:<36}{row['peak_mb']:>9}{row['training_mb']:>10}{row['step_s']:>8}"
              f"{ratios[0]:>10}{ratios[1]:>10}{ratios[2]:>10}")
    fits = {}
    for kind in ("plain", "efficient"):
        series = [r for r in rows if r["kind"] == kind and r["depth"] != 121]
        fits[kind] = depth_fits([r["depth"] for r in series], [r["training_mb"] for r in series])
        linear_r2, (a, b, c), share = fits[kind]
        print(f"training MB vs depth L, {kind}: linear fit R^2 = {linear_r2:.4f}; quadratic fit "
              f"{a:.4f} L^2 + {b:.2f} L + {c:.0f}, L^2 term = {share:.0%} of it at L={depths[-1]}")

    write_csv("memory.csv", rows)
    write_csv("memory_depth_fit.csv", [
        dict(kind=kind, linear_r2=round(linear_r2, 4), quadratic_a=a, quadratic_b=b,
             quadratic_c=c, quadratic_share_at_max_depth=round(share, 3))
        for kind, (linear_r2, (a, b, c), share) in fits.items()])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no memory.png")
        return
    figure, axis = plt.subplots(figsize=(6, 4))
    for kind in ("plain", "efficient"):
        series = [r for r in rows if r["kind"] == kind and r["depth"] != 121]
        line, = axis.plot([r["depth"] for r in series], [r["training_mb"] for r in series], "o",
                          label=f"memory_efficient={kind == 'efficient'}")
        curve = np.linspace(depths[0], depths[-1], 50)
        axis.plot(curve, np.polyval(fits[kind][1], curve), "--", color=line.get_color(),
                  label=f"quadratic fit (L^2 term {fits[kind][2]:.0%} at L={depths[-1]})")
    axis.set_xlabel("depth (DenseNet-BC, k=12, batch 64, 32px)")
    axis.set_ylabel("training memory (MB over the built model)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(RESULTS, "memory.png"), dpi=100)


if __name__ == "__main__":
    main()
