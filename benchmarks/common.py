"""What the benchmark scripts share: where results go and how they are written."""

import csv
import os

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def write_csv(name, rows):
    """Write ``rows`` (dicts with the same keys) to ``benchmarks/results/<name>``; its path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
