"""Semantic segmentation with an FC-DenseNet on generated shapes (no download).

    python examples/segmentation.py                 # FC-DenseNet-style net, 64x64 images
    python examples/segmentation.py --epochs 30 --growth-rate 12
    python examples/segmentation.py --quick         # a smoke run, seconds

The data is made here: images with random discs and squares on a noisy
background; the mask labels each pixel background (0), disc (1) or square (2).
Prints the mean intersection-over-union on held-out images and the time taken.
The defaults take minutes on a CPU. Short runs (``--quick``, or a few hundred
training steps or fewer) only show the mechanics: the BatchNormalization
moving statistics have not settled yet, so the held-out IoU is poor even when
the training accuracy is high.
"""

import argparse
import time

from keras_densenet.apps.cli import start_framework

keras = start_framework()  # before the other imports: TensorFlow's start-up log stays quiet

import numpy as np  # noqa: E402

from keras_densenet.fcn import DenseNetFCN  # noqa: E402

CLASSES = ("background", "disc", "square")
QUICK = dict(images=16, size=32, epochs=1, growth_rate=4, layers=1)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keep the docstring's layout and show every default."""


def make_shapes(count, size=64, seed=0):
    """``(images (count, size, size, 3) float32 in [0, 1], masks (count, size, size) int32)``."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    images = rng.normal(0.5, 0.08, (count, size, size, 3))
    masks = np.zeros((count, size, size), dtype="int32")
    for image, mask in zip(images, masks):
        for _ in range(rng.integers(1, 4)):
            label = int(rng.integers(1, 3))
            radius = rng.integers(size // 10, size // 5)
            cy, cx = rng.integers(radius, size - radius, 2)
            if label == 1:
                inside = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
            else:
                inside = (abs(rows - cy) <= radius) & (abs(cols - cx) <= radius)
            mask[inside] = label
            image[inside] = rng.uniform(0, 1, 3)
    return np.clip(images, 0, 1).astype("float32"), masks


def mean_iou(masks, predicted, classes):
    """Mean over classes of |prediction AND truth| / |prediction OR truth|."""
    ious = []
    for label in range(classes):
        union = np.logical_or(masks == label, predicted == label).sum()
        if union:
            ious.append(np.logical_and(masks == label, predicted == label).sum() / union)
    return float(np.mean(ious))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="training images")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--growth-rate", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2, help="dense layers per block")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: --images 16 --size 32 --epochs 1 --growth-rate 4 "
                             "--layers 1")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    start = time.perf_counter()

    x_train, y_train = make_shapes(args.images, args.size, seed=0)
    x_test, y_test = make_shapes(max(16, args.images // 4), args.size, seed=1)
    model = DenseNetFCN((args.size, args.size, 3), nb_dense_block=args.blocks,
                        growth_rate=args.growth_rate, nb_layers_per_block=args.layers,
                        init_conv_filters=16, dropout_rate=0.0, classes=len(CLASSES))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=16, epochs=args.epochs,
              validation_data=(x_test, y_test))
    predicted = np.argmax(model.predict(x_test, verbose=0), axis=-1)
    print(f"mean IoU on {len(x_test)} held-out images: "
          f"{mean_iou(y_test, predicted, len(CLASSES)):.3f} "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
