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
    figure = history_figure(rows)
    with atomic_path(png_path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)


def history_figure(rows):
    """A matplotlib figure of ``CSVLogger`` rows: loss (log axis) and accuracy (AUROC for a
    multi-label run), per epoch.

    The loss panel has a log axis, so that a large first-epoch loss does not
    flatten the rest. "validation" is the split held out from the training data
    for model selection; the test split is evaluated once, after training, and
    is not plotted.
    """
    import matplotlib.pyplot as plt

    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    score = "accuracy" if "accuracy" in rows[0] else "auroc"
    for axis, metric in zip(axes, ("loss", score)):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if prefix + metric in rows[0]:
                axis.plot(epochs, [float(row[prefix + metric]) for row in rows], label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        if metric == "loss":
            axis.set_yscale("log")
        axis.grid(alpha=0.3, which="both")
        axis.legend()
    figure.tight_layout()
    return figure
