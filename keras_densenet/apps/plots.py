"""Training curves: loss and accuracy per epoch from a ``CSVLogger`` file, as a PNG."""

import csv

from keras_densenet.utils import atomic_path


def plot_history(csv_path, png_path):
    """Plot the train/validation loss and accuracy logged in ``csv_path`` to ``png_path``.

    Needs matplotlib (``pip install keras-densenet[plots]``); the figure is
    written to a temporary file and renamed, so ``png_path`` is never half-written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{csv_path!r} holds no logged epoch to plot.")
    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "train"), ("val_", "test")):
            if prefix + metric in rows[0]:
                axis.plot(epochs, [float(row[prefix + metric]) for row in rows], label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    with atomic_path(png_path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
