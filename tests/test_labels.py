"""Multi-label targets: the ChestX-ray14 CSV layout, per-class AUROC, thresholds."""

import numpy as np
import pytest

from keras_densenet.apps.labels import (LabelsLayout, choose_thresholds, per_class_auroc,
                                        read_labels)


def _folder(tmp_path, rows, header="Image Index,Finding Labels,Patient ID"):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for name, _ in rows:
        (images / name).write_bytes(b"\x89PNG")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(header + "\n" + "".join(f"{n},{l},7\n" for n, l in rows))
    return str(csv_path), str(images)


def test_reads_the_chestxray14_layout(tmp_path):
    csv_path, images = _folder(tmp_path, [("a.png", "Effusion|Mass"), ("b.png", "No Finding"),
                                          ("c.png", "Mass")])
    paths, targets, names = read_labels(csv_path, images)
    assert names == ["Effusion", "Mass"]
    assert paths[0].endswith("a.png") and len(paths) == 3
    np.testing.assert_array_equal(targets, [[1, 1], [0, 0], [0, 1]])


def test_other_column_names_and_separator(tmp_path):
    csv_path, images = _folder(tmp_path, [("a.png", "cat;dog"), ("b.png", "none")],
                               header="file,tags,x")
    layout = LabelsLayout(image_column="file", labels_column="tags", separator=";",
                          none_label="none")
    _, targets, names = read_labels(csv_path, images, layout)
    assert names == ["cat", "dog"] and targets.tolist() == [[1, 1], [0, 0]]


def test_bad_csv_gets_one_line_errors(tmp_path):
    csv_path, images = _folder(tmp_path, [("a.png", "Mass")], header="file,Finding Labels,x")
    with pytest.raises(ValueError, match=r"no column 'Image Index' \(set it with --image-column\)"):
        read_labels(csv_path, images)
    csv_path, images = _folder(tmp_path, [("a.png", "Mass")])
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) missing .* 'a.png'|a\.png"):
        read_labels(csv_path, images)
    csv_path, images = _folder(tmp_path, [("a.png", "No Finding")])
    with pytest.raises(ValueError, match="no class"):
        read_labels(csv_path, images)
    with pytest.raises((ValueError, OSError), match="--labels"):
        read_labels(str(tmp_path / "absent.csv"), images)


def test_auroc_per_class_and_mean():
    targets = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 1, 1]], "float32")
    scores = np.array([[0.9, 0.2, 0.5], [0.1, 0.8, 0.5], [0.8, 0.6, 0.5], [0.3, 0.4, 0.5]])
    values, mean = per_class_auroc(targets, scores)
    assert values[0] == 1.0 and values[1] == 0.75 and np.isnan(values[2])
    assert mean == pytest.approx(0.875)


def test_thresholds_maximize_f1_on_validation():
    targets = np.array([[1], [1], [0], [0]], "float32")
    scores = np.array([[0.7], [0.6], [0.4], [0.65]])
    # F1 is best counting 0.6 and above positive; the threshold sits midway to 0.4
    assert choose_thresholds(targets, scores) == [pytest.approx(0.5)]
    separable = np.array([[0.9], [0.8], [0.2], [0.1]])
    assert choose_thresholds(targets, separable) == [pytest.approx(0.5)]
    assert choose_thresholds(np.zeros((3, 1), "float32"), np.ones((3, 1))) == [0.5]
