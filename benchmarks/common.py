"""What the benchmark scripts share: where results go and how they are written."""

import csv
import os

from keras_densenet.utils import atomic_path

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def write_csv(name, rows):
    """Write ``rows`` (dicts) to ``benchmarks/results/<name>``, atomically (a run killed
    meanwhile leaves the earlier file whole: ``memory.py`` keeps rows from it); its path.
    The columns are every key, in order of first appearance; a row without one leaves it empty
    (rows kept from a file written before a column existed)."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with atomic_path(path) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(
                key for row in rows for key in row)))
            writer.writeheader()
            writer.writerows(rows)
    return path
