"""Training curves: a log loss axis, train and validation curves."""

import pytest

pytest.importorskip("matplotlib")

from keras_densenet.apps.plots import history_figure, plot_history  # noqa: E402


def test_loss_axis_is_logarithmic_and_curves_are_train_and_validation(tmp_path):
    rows = [{"epoch": "0", "loss": "70.0", "val_loss": "65.0", "accuracy": "0.1",
             "val_accuracy": "0.1"},
            {"epoch": "1", "loss": "0.3", "val_loss": "0.4", "accuracy": "0.9",
             "val_accuracy": "0.88"}]
    figure = history_figure(rows)
    loss_axis, accuracy_axis = figure.axes
    assert loss_axis.get_yscale() == "log" and accuracy_axis.get_yscale() == "linear"
    for axis in figure.axes:
        assert [line.get_label() for line in axis.get_lines()] == ["train", "validation"]
    csv_path = tmp_path / "log.csv"
    csv_path.write_text("epoch,loss,val_loss\n0,70.0,65.0\n1,0.3,0.4\n")
    plot_history(str(csv_path), str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
