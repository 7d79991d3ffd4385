"""What the benchmark scripts share: where results go and how they are written."""

import csv
import os

from keras_densenet.utils import atomic_path

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def write_csv(name, rows):
    """Write ``rows`` (dicts with the same keys) to ``benchmarks/results/<name>``, atomically
    (a run killed meanwhile leaves the earlier file whole: ``memory.py`` keeps rows from it);
    its path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with atomic_path(path) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path
