"""Training memory and step time of the memory_efficient modes vs keras.applications.

    python benchmarks/memory.py                      # all three parts below (slow: hours on 2 cores)
    python benchmarks/memory.py --parts compare depth
    python benchmarks/memory.py --parts budget --budget-models 121 --budgets 4000 8000
    python benchmarks/memory.py --parts compare --backend jax   # the same on JAX (or torch)
    python benchmarks/memory.py --quick              # smaller everything: to check that it runs

Parts, each writing its CSV under benchmarks/results/ (memory.png is redrawn
from whichever CSVs exist):

- ``compare`` (memory.csv): DenseNet-121, batch 16, 224px: keras.applications,
  ours with ``memory_efficient`` False, True and "full" (``--compare-network
  blur121d``: ours is timm's deep-stem, blur-pooled DenseNetBlur121d,
  memory_blur121d.csv).
- ``depth`` (memory_depth.csv, memory_depth_fit.csv): DenseNet-BC k=12,
  L=40/100/190/250, batch 64, 32px, each mode; least-squares fits of training
  memory against depth (linear R^2; the L^2 term's share of a quadratic fit)
  and the MB added per unit of depth between consecutive depths; with
  ``--repeats N`` each depth runs N times (fresh processes; where the
  allocators' blocks land varies with the threads' timing) and the fits use
  each depth's median.
- ``budget`` (memory_budget.csv): the largest batch whose training step stays
  within a peak-RSS budget (4 GB and 8 GB), DenseNet-121 and DenseNet-264 at
  224px, each mode, by doubling then bisection (to 10% by default); a probe
  that crosses the budget is stopped. Rows of other models and budgets already
  in the CSV are kept.

Every configuration runs in a fresh process, so that peak RSS is its own: one
warm-up step (tracing), then timed steps of SGD with momentum on random data.
glibc keeps freed tensors of up to 32 MB in its heaps, so peak RSS also
measures how fragmented they get; ``--mmap-threshold 65536`` runs every worker,
the reference too, with freed blocks returned to the system, ``--tf-bfc``
with TensorFlow's own allocator for tensors, and ``--onednn-malloc`` with
malloc for the tensors of TensorFlow's oneDNN ops, which otherwise come from a
best-fit pool that never shrinks (the ``malloc`` column says which);
``--huge-pages`` makes the memory returned and taken again cost fewer page faults;
``--malloc-arenas 1`` gives glibc one heap for all threads instead of up to
eight per core, each keeping its own freed blocks.
"training MB" is the peak RSS minus the process's RSS just before the first
step (model built and compiled); "tensor_peak_mb" is the most bytes of tensors in
use at once in the process, TensorFlow's CPU allocator's own count (its default
oneDNN pool and its BFC keep one; empty where none is kept), and the depth fits
give its MB per unit of depth too. ``compare`` also trains each model one step at
batch 1 ("b1 MB"): nearly all of that is the traced graph and TensorFlow's
runtime, not tensors, and the difference ("batch share") is what the
per-image tensors and their fragmentation add. Each row records the 1-minute load average
when it started: on a shared machine step times are only comparable within
one run; the process CPU time per step (all its threads) is less sensitive
to other jobs, and is reported next to the wall time.
"""

import argparse
import collections
import json
import os
import subprocess
import sys

import numpy as np

from common import RESULTS, write_csv

MODES = {"plain": False, "efficient": True, "full": "full"}
"""Our model's benchmark kinds and their ``memory_efficient`` values."""
REFERENCE = "keras.applications"

WORKER = r"""
import json, os, resource, sys, threading, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
kind, network, size, batch, steps, budget_mb, mode = sys.argv[1:8]
size, batch, steps, budget_mb, mode = (int(size), int(batch), int(steps), float(budget_mb),
                                       json.loads(mode))
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
def watchdog():  # stop a probe as soon as it crosses the budget
    while True:
        if rss_mb() > budget_mb:
            os._exit(3)
        time.sleep(0.02)
if budget_mb:
    threading.Thread(target=watchdog, daemon=True).start()
import keras, numpy as np
import keras_densenet
PRESETS = {"121": "DenseNetImageNet121", "264": "DenseNetImageNet264",
           "blur121d": "DenseNetBlur121d"}
if kind == "keras.applications":
    model = keras.applications.DenseNet121(weights=None, input_shape=(size, size, 3))
elif network in PRESETS:
    preset = getattr(keras_densenet, PRESETS[network])
    model = preset(input_shape=(size, size, 3), memory_efficient=mode)
else:  # DenseNet-BC k=12 of that depth
    model = keras_densenet.DenseNet(depth=int(network), growth_rate=12, bottleneck=True,
                                    reduction=0.5, input_shape=(size, size, 3), classes=10,
                                    memory_efficient=mode)
classes = model.output.shape[-1]
model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
y = np.arange(batch) % classes
built = rss_mb()
model.train_on_batch(x, y)  # warm-up: tracing
start, start_cpu = time.perf_counter(), time.process_time()
for _ in range(steps):
    model.train_on_batch(x, y)
step = (time.perf_counter() - start) / steps if steps else float("nan")
cpu = (time.process_time() - start_cpu) / steps if steps else float("nan")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if budget_mb and peak > budget_mb:
    sys.exit(3)
tensor_peak = 0  # the CPU allocator's own count, where it keeps one
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    try:
        tensor_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
    except ValueError:  # oneDNN off and no BFC: malloc, no count
        pass
print(json.dumps(dict(peak_mb=round(peak), training_mb=round(peak - built), step_s=round(step, 3),
                 step_cpu_s=round(cpu, 3), tensor_peak_mb=round(tensor_peak) or "")))
"""
OVER_BUDGET = 3


def measure(kind, network, size, batch, steps, budget_mb=0):
    """Train ``steps`` (+1 warm-up) steps of ``network`` in a fresh process.

    ``network``: 121, 264 or "blur121d" (our ImageNet presets; keras.applications'
    DenseNet-121 for the reference kind), or the depth of a DenseNet-BC with k=12.

    Returns ``{"load_1min", "peak_mb", "training_mb", "step_s", "step_cpu_s"}``
    (wall and process CPU seconds per step), or ``None``
    when the process crossed ``budget_mb`` of RSS (0: no budget).
    """
    load = round(os.getloadavg()[0], 2)
    result = subprocess.run(
        [sys.executable, "-c", WORKER, kind, str(network), str(size), str(batch), str(steps),
         str(budget_mb), json.dumps(MODES.get(kind, False))],
        capture_output=True, text=True)
    if budget_mb and result.returncode == OVER_BUDGET:
        return None
    if result.returncode:
        raise RuntimeError(f"{kind} {network} batch {batch} failed:\n{result.stderr[-2000:]}")
    return dict(load_1min=load, malloc=allocator(),
                **json.loads(result.stdout.strip().splitlines()[-1]))


ALLOCATOR_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": "mmap", "TF_CPU_ALLOCATOR_USE_BFC": "bfc",
                      "TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "onednnmalloc", "GLIBC_TUNABLES": "thp",
                      "MALLOC_ARENA_MAX": "arenas"}
"""Variables that ``--mmap-threshold``, ``--tf-bfc``, ``--onednn-malloc``,
``--huge-pages`` and ``--malloc-arenas`` set for every worker (read when a process
starts), and the tag each adds to the result files' names (with the value, for the
numeric ones)."""
BACKENDS = ("tensorflow", "jax", "torch")
"""``--backend``: the workers' ``KERAS_BACKEND``; results of another than TensorFlow are
written to ``*_{backend}.csv``."""


def allocator():
    """How the workers' memory is allocated, for the CSVs (they inherit this environment)."""
    return ", ".join(["glibc", *(f"{name}={os.environ[name]}" for name in ALLOCATOR_SETTINGS
                                 if name in os.environ)])


def result_name(name):
    """``name`` of a CSV or plot, marked when an allocator setting is not the default."""
    tags = [tag + (os.environ[variable] if tag in ("mmap", "arenas") else "")
            for variable, tag in ALLOCATOR_SETTINGS.items() if variable in os.environ]
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    stem, suffix = os.path.splitext(name)
    return "_".join([stem, *tags, *([backend] if backend != "tensorflow" else [])]) + suffix


def largest_batch(kind, depth, size, budget_mb, precision, start=8):
    """The largest batch whose training step stays within ``budget_mb`` of peak RSS.

    Doubles from ``start`` until a batch crosses the budget, then bisects until
    the failing batch is within ``precision`` (relative, at least 1) of the
    fitting one. Returns ``(largest fitting batch found or 0, smallest failing
    batch, probes)``.
    """
    fits, fails, probes = 0, None, 0
    batch = start
    while fails is None:
        probes += 1
        if measure(kind, depth, size, batch, 0, budget_mb) is None:
            fails = batch
        else:
            fits, batch = batch, batch * 2
    while fails - fits > max(1, precision * fits):
        probes += 1
        batch = (fits + fails) // 2
        if measure(kind, depth, size, batch, 0, budget_mb) is None:
            fails = batch
        else:
            fits = batch
        print(f"  {kind} DenseNet-{depth} {budget_mb} MB: fits {fits}, fails {fails}", flush=True)
    return fits, fails, probes


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


COMPARE_NETWORKS = {"121": "DenseNet121", "blur121d": "DenseNetBlur121d"}
"""``--compare-network``: ours in the compare part (the reference is DenseNet-121 always)."""


def compare(size, batch, steps, csv_name, kinds, network="121"):
    rows = []
    for kind in (REFERENCE, *[k for k in MODES if k in kinds]):
        ours = "121" if kind == REFERENCE else network
        row = dict(model=f"{COMPARE_NETWORKS[ours]} {kind}", kind=kind, batch=batch, size=size,
                   **measure(kind, ours, size, batch, steps))
        # The same step at batch 1: the graph's and runtime's share, nearly all of it.
        row["batch1_training_mb"] = measure(kind, ours, size, 1, 0)["training_mb"]
        row["batch_share_mb"] = row["training_mb"] - row["batch1_training_mb"]
        rows.append(row)
        print(rows[-1], flush=True)
    reference = rows[0]
    for row in rows:
        for key, ratio in (("peak_mb", "peak_vs_ref"), ("training_mb", "training_vs_ref"),
                           ("step_s", "time_vs_ref"), ("step_cpu_s", "cpu_time_vs_ref"),
                           ("batch_share_mb", "batch_share_vs_ref")):
            row[ratio] = round(row[key] / reference[key], 3)
    print(f"\n{COMPARE_NETWORKS[network]} (reference: DenseNet121), batch {batch}, {size}px")
    print(f"{'model':<36}{'load':>6}{'peak MB':>9}{'train MB':>10}{'b1 MB':>7}{'step s':>8}"
          f"{'CPU s':>8}{'peak/ref':>10}{'train/ref':>10}{'batch/ref':>10}{'time/ref':>10}"
          f"{'CPU/ref':>10}")
    for row in rows:
        print(f"{row['model']:<36}{row['load_1min']:>6}{row['peak_mb']:>9}{row['training_mb']:>10}"
              f"{row['batch1_training_mb']:>7}{row['step_s']:>8}{row['step_cpu_s']:>8}"
              f"{row['peak_vs_ref']:>9}x{row['training_vs_ref']:>9}x"
              f"{row['batch_share_vs_ref']:>9}x{row['time_vs_ref']:>9}x"
              f"{row['cpu_time_vs_ref']:>9}x")
    write_csv(result_name(csv_name), rows)


def depth_series(depths, steps, kinds, repeats=1):
    """Rows of the modes not in ``kinds`` already in the CSV are kept (and fitted again)."""
    measured = [k for k in MODES if k in kinds]
    rows = [{"repeat": 0, **row} for row in read_csv(result_name("memory_depth.csv"))
            if row["kind"] not in measured]
    for repeat in range(repeats):
        for depth in depths:
            for kind in measured:
                rows.append(dict(model=f"DenseNet-BC-{depth} k=12 {kind}", kind=kind,
                                 depth=depth, repeat=repeat,
                                 **measure(kind, depth, 32, 64, steps)))
                print(rows[-1], flush=True)
    rows.sort(key=lambda row: (int(row["depth"]), list(MODES).index(row["kind"]),
                               int(row["repeat"])))
    fit_rows = []
    for kind in [k for k in MODES if any(r["kind"] == k for r in rows)]:
        series = [r for r in rows if r["kind"] == kind]
        depths_mb = median_by_depth(series)
        linear_r2, (a, b, c), share = depth_fits(*zip(*depths_mb))
        per_depth = per_unit_of_depth(depths_mb)
        # The allocator's own peak of tensors in use, where every run of the mode has it.
        counted = all(r.get("tensor_peak_mb") not in (None, "") for r in series)
        tensor_per_depth = (per_unit_of_depth(median_by_depth(series, "tensor_peak_mb"))
                            if counted else [])
        print(f"training MB vs depth L, {kind}: linear fit R^2 = {linear_r2:.4f}; quadratic fit "
              f"{a:.4f} L^2 + {b:.2f} L + {c:.0f}, L^2 term = {share:.0%} of it at "
              f"L={depths_mb[-1][0]}; "
              f"MB per unit of depth between consecutive depths: {per_depth}"
              + (f"; of the tensors' peak: {tensor_per_depth}" if counted else ""))
        fit_rows.append(dict(kind=kind, linear_r2=round(linear_r2, 4), quadratic_a=a,
                             quadratic_b=b, quadratic_c=c,
                             quadratic_share_at_max_depth=round(share, 3),
                             mb_per_depth=" ".join(map(str, per_depth)),
                             tensor_mb_per_depth=" ".join(map(str, tensor_per_depth)),
                             runs_per_depth=min(collections.Counter(
                                 int(r["depth"]) for r in series).values())))
    write_csv(result_name("memory_depth.csv"), rows)
    write_csv(result_name("memory_depth_fit.csv"), fit_rows)


def median_by_depth(series, column="training_mb"):
    """``[(depth, median of column)]`` of one mode's depth rows, by increasing depth."""
    depths = sorted({int(row["depth"]) for row in series})
    return [(depth, float(np.median([float(row[column]) for row in series
                                     if int(row["depth"]) == depth])))
            for depth in depths]


def per_unit_of_depth(depths_mb):
    """MB added per unit of depth between consecutive ``(depth, MB)`` pairs."""
    return [round((mb2 - mb1) / (d2 - d1), 1)
            for (d1, mb1), (d2, mb2) in zip(depths_mb, depths_mb[1:])]


def budgets(models, budgets_mb, size, kinds, precision):
    rows = []
    for depth in models:
        for budget in budgets_mb:
            for kind in kinds:
                if kind == REFERENCE and depth != 121:
                    continue  # keras.applications has no DenseNet-264
                load = round(os.getloadavg()[0], 2)
                fits, fails, probes = largest_batch(kind, depth, size, budget, precision)
                rows.append(dict(model=f"DenseNet{depth}", kind=kind, size=size, budget_mb=budget,
                                 largest_batch=fits, first_failing_batch=fails, probes=probes,
                                 load_1min=load))
                print(rows[-1], flush=True)
    for row in rows:
        plain = [r["largest_batch"] for r in rows if r["kind"] == "plain"
                 and r["model"] == row["model"] and r["budget_mb"] == row["budget_mb"]]
        row["vs_plain"] = round(row["largest_batch"] / plain[0], 2) if plain and plain[0] else ""
    measured = {(row["model"], str(row["budget_mb"])) for row in rows}
    kept = [row for row in read_csv(result_name("memory_budget.csv"))  # other models/budgets
            if (row["model"], row["budget_mb"]) not in measured]
    write_csv(result_name("memory_budget.csv"), kept + rows)


def read_csv(name):
    import csv

    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def plot():
    """memory.png from the CSVs: training memory vs depth, and DenseNet-121's bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no memory.png")
        return
    depth_rows = read_csv(result_name("memory_depth.csv"))
    compare_rows = read_csv(result_name("memory.csv"))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, flag in MODES.items():
        series = median_by_depth([r for r in depth_rows if r["kind"] == kind])
        if series:
            left.plot(*zip(*series), "o-", label=f"memory_efficient={flag!r}")
    left.set_xlabel("depth L (DenseNet-BC, k=12, batch 64, 32px)")
    left.set_ylabel("training MB (peak RSS - RSS before step 1)")
    left.grid(alpha=0.3)
    if depth_rows:
        left.legend()
    if compare_rows:
        labels = [r["kind"] for r in compare_rows]
        positions = np.arange(len(labels))
        right.bar(positions - 0.2, [int(r["training_mb"]) for r in compare_rows], 0.4,
                  label="training MB")
        right.bar(positions + 0.2, [int(r["peak_mb"]) for r in compare_rows], 0.4, label="peak MB")
        right.set_xticks(positions, [f"{k}\n{float(r['step_s']):.2f} s/step"
                                     for k, r in zip(labels, compare_rows)], fontsize=8)
        first = compare_rows[0]
        right.set_title(f"DenseNet-121, batch {first['batch']}, {first['size']}px")
        right.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(RESULTS, result_name("memory.png")), dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that it runs")
    parser.add_argument("--parts", nargs="+", choices=("compare", "depth", "budget"),
                        default=["compare", "depth", "budget"])
    parser.add_argument("--batch", type=int, help="compare: batch (default 16)")
    parser.add_argument("--compare-network", choices=COMPARE_NETWORKS, default="121",
                        help="compare: our network, DenseNet-121 (default) or timm's "
                             "deep-stem, blur-pooled DenseNetBlur121d; results of the latter "
                             "are written to memory_blur121d*.csv")
    parser.add_argument("--size", type=int, help="compare and budget: image size (default 224)")
    parser.add_argument("--steps", type=int,
                        help="timed steps after the warm-up step (default 3, --quick 2)")
    parser.add_argument("--depths", nargs="+", type=int,
                        help="depth: DenseNet-BC depths (default 40 100 190 250)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="depth: runs of each depth and mode (default 1); the fits use "
                             "each depth's median")
    parser.add_argument("--budget-models", nargs="+", type=int, choices=(121, 264),
                        default=[121, 264])
    parser.add_argument("--budgets", nargs="+", type=int, default=[4000, 8000],
                        help="peak-RSS budgets in MB (default 4000 8000)")
    parser.add_argument("--kinds", nargs="+", choices=(REFERENCE, *MODES),
                        default=[REFERENCE, *MODES],
                        help="which models to measure (compare always runs the reference)")
    parser.add_argument("--precision", type=float, default=0.1,
                        help="budget: stop bisecting when the failing batch is within this "
                             "fraction of the fitting one (default 0.1)")
    parser.add_argument("--mmap-threshold", type=int, metavar="BYTES",
                        help="run every worker (reference included) with glibc's "
                             "MALLOC_MMAP_THRESHOLD_=BYTES, e.g. 65536: freed tensors go back "
                             "to the system instead of staying in the heap; results are "
                             "written to *_mmapBYTES.csv")
    parser.add_argument("--tf-bfc", action="store_true",
                        help="run every worker (reference included) with "
                             "TF_CPU_ALLOCATOR_USE_BFC=true: TensorFlow's own best-fit "
                             "allocator for CPU tensors instead of malloc; results are "
                             "written to *_bfc.csv")
    parser.add_argument("--onednn-malloc", action="store_true",
                        help="run every worker (reference included) with "
                             "TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1: the tensors of TensorFlow's "
                             "oneDNN ops come from malloc instead of a best-fit pool that "
                             "keeps every block it has grown to; results are written to "
                             "*_onednnmalloc.csv (with --mmap-threshold: freed blocks go back "
                             "to the system)")
    parser.add_argument("--huge-pages", action="store_true",
                        help="run every worker (reference included) with "
                             "GLIBC_TUNABLES=glibc.malloc.hugetlb=1: malloc asks for "
                             "transparent huge pages, so that memory given back to the system "
                             "(--mmap-threshold) costs fewer page faults when it is taken "
                             "again; results are written to *_thp.csv")
    parser.add_argument("--malloc-arenas", type=int, metavar="N",
                        help="run every worker (reference included) with glibc's "
                             "MALLOC_ARENA_MAX=N, e.g. 1: one heap for all threads instead of "
                             "up to eight per core, each keeping its own freed blocks; results "
                             "are written to *_arenasN.csv")
    parser.add_argument("--backend", choices=BACKENDS, default="tensorflow",
                        help="the workers' Keras backend (default tensorflow); results of "
                             "another are written to *_{backend}.csv")
    args = parser.parse_args()
    for name in ("repeats", "malloc_arenas"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1; "
                         f"got {getattr(args, name)}")
    # For the workers: this process has already started.
    os.environ["KERAS_BACKEND"] = args.backend
    if args.mmap_threshold is not None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    if args.tf_bfc:
        os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    if args.onednn_malloc:
        os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] = "1"
    if args.huge_pages:
        os.environ["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    if args.malloc_arenas is not None:
        os.environ["MALLOC_ARENA_MAX"] = str(args.malloc_arenas)
    size = args.size or (112 if args.quick else 224)
    steps = args.steps or (2 if args.quick else 3)
    if "compare" in args.parts:
        name = "memory" if args.compare_network == "121" else f"memory_{args.compare_network}"
        compare(size, args.batch or (8 if args.quick else 16), steps,
                f"{name}.csv" if args.batch in (None, 16) else f"{name}_b{args.batch}.csv",
                args.kinds, args.compare_network)
    if "depth" in args.parts:
        depth_series(args.depths or ((16, 40, 64) if args.quick else (40, 100, 190, 250)), steps,
                     args.kinds, args.repeats)
    if "budget" in args.parts:
        budgets(args.budget_models, args.budgets, size, args.kinds, args.precision)
    plot()


if __name__ == "__main__":
    main()
