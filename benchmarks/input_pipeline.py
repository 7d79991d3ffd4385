"""Images/s of the ImageNet-layout input pipeline against a DenseNet-121 training step.

    python benchmarks/input_pipeline.py                  # 512 synthetic JPEGs, 224px
    python benchmarks/input_pipeline.py --folder DIR     # an existing image folder

Generates a folder of JPEGs shaped like ImageNet's (8 class sub-folders,
300-500 px sides, quality 90; no download), then measures the images/s that
``keras_densenet.apps.data.imagenet_train_pipeline`` (read, decode,
random-resized-crop, flip, normalize, batch 32, prefetch) delivers (median
of 3 epochs, configurations interleaved), sequential vs. parallel decode, without and with the in-memory cache
(cached: the second epoch), and the CLI's image-folder loader today
(``keras.utils.image_dataset_from_directory`` + pad-crop-flip). The reference,
measured in the same run: images/s of a DenseNet-121 (TensorFlow, 224px, SGD)
training step at batch 16 and 32. Each pipeline row gives its ratio to the
training step: the pipeline keeps training fed when the ratio is >= 1 (the
target here is 3). The 1-minute load average is recorded on every row.
Writes benchmarks/results/input_pipeline.csv.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from common import write_csv  # noqa: E402

IMAGE_SIZE = 224
BATCH = 32


def make_jpeg_folder(path, classes=8, per_class=64, seed=0):
    """``classes x per_class`` JPEGs of smooth random content, sides 300-500 px."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        os.makedirs(os.path.join(path, f"n{c:08d}"), exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(300, 501, size=2)
            coarse = rng.integers(0, 256, size=(h // 16 + 1, w // 16 + 1, 3)).astype("uint8")
            image = Image.fromarray(coarse).resize((int(w), int(h)), Image.BICUBIC)
            noisy = np.clip(np.asarray(image, "int16") + rng.integers(-12, 13, (h, w, 3)), 0, 255)
            Image.fromarray(noisy.astype("uint8")).save(
                os.path.join(path, f"n{c:08d}", f"img_{i:05d}.JPEG"), quality=90)


def images_per_second(dataset, epochs_before=0):
    """Images/s over one epoch of ``dataset`` (after ``epochs_before`` untimed epochs)."""
    for _ in range(epochs_before):
        for _ in dataset:
            pass
    count, start = 0, time.perf_counter()
    for images, _ in dataset:
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def training_images_per_second(batch, repeats):
    """Images/s of DenseNet-121 ``train_on_batch`` at ``batch`` (median of ``repeats``)."""
    import keras

    from keras_densenet import DenseNetImageNet121

    keras.utils.set_random_seed(0)
    model = DenseNetImageNet121(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    y = np.arange(batch) % 1000
    model.train_on_batch(x, y)  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="an image folder (default: 512 synthetic JPEGs)")
    parser.add_argument("--repeats", type=int, default=3, help="timed training steps")
    parser.add_argument("--rounds", type=int, default=3,
                        help="epochs timed per pipeline (median)")
    args = parser.parse_args(argv)
    from keras_densenet.apps import data

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or os.path.join(scratch, "images")
        if not args.folder:
            make_jpeg_folder(folder)
        files, labels, _, _ = data.image_folder_files(folder)
        mean_kb = np.mean([os.path.getsize(f) for f in files]) / 1024
        print(f"{len(files)} images, mean {mean_kb:.0f} KB, {os.cpu_count()} CPU cores")

        def pipeline(**options):
            return data.imagenet_train_pipeline(files, labels, IMAGE_SIZE, BATCH, **options)

        configs = {  # name: (a fresh dataset, untimed epochs first)
            "sequential decode": (lambda: pipeline(parallel=False), 0),
            "parallel decode": (lambda: pipeline(parallel=True), 0),
            "sequential decode + cache (2nd epoch)": (
                lambda: pipeline(parallel=False, cache=True), 1),
            "parallel decode + cache (2nd epoch)": (
                lambda: pipeline(parallel=True, cache=True), 1),
            "CLI image_folder today (resize + pad-crop-flip)": (
                lambda: data.image_folder(folder, IMAGE_SIZE, BATCH, augment=True).train, 0),
        }
        rates = {name: [] for name in configs}
        for _ in range(args.rounds):  # interleaved, so that load changes hit every config
            for name, (make, epochs_before) in configs.items():
                rates[name].append(images_per_second(make(), epochs_before))
        rows = []
        for name, values in rates.items():
            rows.append(dict(kind="pipeline", config=name, batch=BATCH,
                             images_per_s=round(statistics.median(values), 1),
                             load_avg_1m=os.getloadavg()[0]))
            print(f"{name}: {[round(v) for v in values]} images/s")

    steps = {}
    for batch in (16, 32):
        steps[batch] = training_images_per_second(batch, args.repeats)
        rows.append(dict(kind="training_step", config=f"DenseNet-121 train_on_batch b{batch}",
                         batch=batch, images_per_s=round(steps[batch], 2),
                         load_avg_1m=os.getloadavg()[0]))
        print(f"DenseNet-121 training step, batch {batch}: {steps[batch]:.2f} images/s")
    for row in rows:
        row["ratio_to_step_b16"] = round(row["images_per_s"] / steps[16], 1)
        row["ratio_to_step_b32"] = round(row["images_per_s"] / steps[32], 1)
    path = write_csv("input_pipeline.csv", rows)
    for row in rows:
        print(f"{row['config']:<50} {row['images_per_s']:>8} img/s  "
              f"x{row['ratio_to_step_b16']} (b16 step)  x{row['ratio_to_step_b32']} (b32 step)  "
              f"load {row['load_avg_1m']:.1f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
