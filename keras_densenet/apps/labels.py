"""Multi-label targets: a CSV of image names and their labels, per-class AUROC and thresholds.

The default layout is the NIH ChestX-ray14 ``Data_Entry_2017.csv``: a column
``Image Index`` (the file name, relative to the image folder) and a column
``Finding Labels`` holding the image's labels joined by ``|``, with
``No Finding`` for none. Other layouts name their columns, separator and
"none" label by option. Nothing here imports a framework.
"""

import csv
import dataclasses
import os

import numpy as np

from keras_densenet.utils import check_input_path


@dataclasses.dataclass(frozen=True)
class LabelsLayout:
    """How a labels CSV is laid out (defaults: NIH ChestX-ray14's)."""

    image_column: str = "Image Index"
    labels_column: str = "Finding Labels"
    separator: str = "|"
    none_label: str = "No Finding"


def read_labels(csv_path, image_dir, layout=LabelsLayout()):
    """``(paths, targets, class_names)`` of the images a labels CSV lists.

    ``paths``: one file path per row (``image_dir`` joined with the image
    column); ``targets``: ``(rows, classes)`` float32, 1 where the row has the
    class; ``class_names``: the labels found, sorted (``layout.none_label``
    is no class). Raises a one-line ``ValueError`` naming the file for a
    missing column, an empty file, a row without an image name or a listed
    image that does not exist.
    """
    check_input_path(csv_path, "--labels", "file")
    check_input_path(image_dir, "--data", "folder")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for option, column in (("--image-column", layout.image_column),
                               ("--labels-column", layout.labels_column)):
            if column not in columns:
                raise ValueError(f"{csv_path}: no column {column!r} (set it with {option}); "
                                 f"the columns are {columns}.")
        rows = [(row[layout.image_column] or "", row[layout.labels_column] or "")
                for row in reader]
    if not rows:
        raise ValueError(f"{csv_path} lists no images.")
    per_row = []
    for line, (name, labels) in enumerate(rows, start=2):
        if not name.strip():
            raise ValueError(f"{csv_path}, line {line}: no image name in {layout.image_column!r}.")
        per_row.append({label.strip() for label in labels.split(layout.separator)}
                       - {layout.none_label, ""})
    paths = [os.path.join(image_dir, name.strip()) for name, _ in rows]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise ValueError(f"{csv_path} lists {len(missing)} image(s) missing from {image_dir}, "
                         f"e.g. {missing[0]!r}.")
    class_names = sorted(set().union(*per_row))
    if not class_names:
        raise ValueError(f"{csv_path}: every row is {layout.none_label!r}: there is no class "
                         "to learn.")
    index = {name: i for i, name in enumerate(class_names)}
    targets = np.zeros((len(rows), len(class_names)), "float32")
    for row, labels in enumerate(per_row):
        targets[row, [index[label] for label in labels]] = 1.0
    return paths, targets, class_names


def per_class_auroc(targets, scores):
    """Area under the ROC curve of each class (``NaN`` where a class has only positives or only
    negatives) and their mean over the defined ones: ``(list of floats, float)``.

    ``targets``, ``scores``: ``(images, classes)``.
    """
    from sklearn.metrics import roc_auc_score

    values = [float(roc_auc_score(targets[:, c], scores[:, c]))
              if 0 < targets[:, c].sum() < len(targets) else float("nan")
              for c in range(targets.shape[1])]
    defined = [v for v in values if not np.isnan(v)]
    return values, float(np.mean(defined)) if defined else float("nan")


def choose_thresholds(targets, scores, default=0.5):
    """One decision threshold per class, maximizing the F1 score on these (validation)
    images: midway between the lowest score counted positive at the best F1 and the
    highest score below it (the same F1 here, a margin for new images); ``default``
    for a class without positives.

    ``targets``, ``scores``: ``(images, classes)``. Returns a list of floats.
    """
    from sklearn.metrics import precision_recall_curve

    thresholds = []
    for c in range(targets.shape[1]):
        if not targets[:, c].any():
            thresholds.append(default)
            continue
        precision, recall, candidates = precision_recall_curve(targets[:, c], scores[:, c])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = float(candidates[int(np.argmax(f1))])
        below = scores[:, c][scores[:, c] < best]
        thresholds.append((best + float(below.max())) / 2 if below.size else best)
    return thresholds
