"""The benchmark scripts' own arithmetic and files (``benchmarks/``), on tiny inputs."""

import csv
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")


@pytest.fixture
def memory(monkeypatch, tmp_path):
    """``benchmarks/memory.py`` as a module, its results directory a temporary one."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    import common
    import memory

    monkeypatch.setattr(common, "RESULTS", str(tmp_path))
    monkeypatch.setattr(memory, "RESULTS", str(tmp_path))
    return memory


def test_csv_columns_are_every_rows_keys(memory, tmp_path):
    # A row kept from a file written before a column existed leaves that column empty.
    memory.write_csv("rows.csv", [{"kind": "plain", "training_mb": 9},
                                  {"kind": "full", "training_mb": 5, "tensor_peak_mb": 3}])
    with open(tmp_path / "rows.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["kind", "training_mb", "tensor_peak_mb"]
    assert [row["tensor_peak_mb"] for row in rows] == ["", "3"]
    assert memory.read_csv("rows.csv") == rows


def test_depth_fits_and_increments(memory):
    depths = [40, 100, 190, 250]
    linear_r2, _, share = memory.depth_fits(depths, [100 + 7 * d for d in depths])
    assert linear_r2 == pytest.approx(1.0) and share == pytest.approx(0.0, abs=1e-6)
    _, (a, _, _), share = memory.depth_fits(depths, [d * d for d in depths])
    assert a == pytest.approx(1.0) and share == pytest.approx(1.0)
    rows = [{"depth": "40", "training_mb": "400", "tensor_peak_mb": "160"},
            {"depth": "100", "training_mb": "800", "tensor_peak_mb": "300"},
            {"depth": "100", "training_mb": "900", "tensor_peak_mb": "310"},
            {"depth": "100", "training_mb": "820", "tensor_peak_mb": "290"}]
    assert memory.median_by_depth(rows) == [(40, 400.0), (100, 820.0)]
    assert memory.median_by_depth(rows, "tensor_peak_mb") == [(40, 160.0), (100, 300.0)]
    assert memory.per_unit_of_depth([(40, 400.0), (100, 820.0), (190, 1540.0)]) == [7.0, 8.0]


def test_worker_reports_memory_and_the_allocators_tensor_peak(memory):
    # One training step of a DenseNet-BC of depth 16 at batch 2 in a fresh process; with
    # oneDNN on (conftest), TensorFlow's CPU allocator counts the tensors it hands out.
    result = memory.measure("full", 16, 32, 2, 0)
    assert result["training_mb"] > 0 and result["malloc"] == memory.allocator()
    assert 0 < result["tensor_peak_mb"] < result["peak_mb"]
