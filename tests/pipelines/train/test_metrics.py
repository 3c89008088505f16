"""Evaluation metrics (pipelines/train/metrics.py) against hand-computed numbers.

The running example: classes a, b, c, d; y_true = [0, 0, 1, 1, 1, 2], y_pred =
[0, 1, 1, 1, 0, 2].  By hand: a tp 1, fp 1, fn 1 (P = R = F1 = 1/2, support 2); b tp 2, fp 1,
fn 1 (2/3 each, support 3); c tp 1 (1 each, support 1); d never occurs nor is predicted
(undefined).  Accuracy 4/6; macro over a, b, c = (1/2 + 2/3 + 1) / 3 = 13/18; weighted =
(2 · 1/2 + 3 · 2/3 + 1 · 1) / 6 = 2/3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from pipelines.train import metrics

CLASSES = ["a", "b", "c", "d"]
Y_TRUE = [0, 0, 1, 1, 1, 2]
Y_PRED = [0, 1, 1, 1, 0, 2]


def test_confusion_matrix_rows_are_true_classes():
    cm = metrics.confusion_matrix([*Y_TRUE, -1], [*Y_PRED, 3], n_classes=4)  # -1: no label
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError):
        metrics.confusion_matrix([0, 4], [0, 0], n_classes=4)


def test_classification_report_hand_computed():
    report = metrics.classification_report(Y_TRUE, Y_PRED, CLASSES)
    assert list(report.index) == [*CLASSES, "macro avg", "weighted avg", "accuracy"]
    assert list(report.columns) == ["precision", "recall", "f1", "support"]
    expected = {"a": (1 / 2, 1 / 2, 1 / 2, 2), "b": (2 / 3, 2 / 3, 2 / 3, 3),
                "c": (1, 1, 1, 1), "macro avg": (13 / 18, 13 / 18, 13 / 18, 6),
                "weighted avg": (2 / 3, 2 / 3, 2 / 3, 6)}
    for row, values in expected.items():
        np.testing.assert_allclose(report.loc[row].to_numpy(dtype=float), values)
    assert report.loc["d", ["precision", "recall", "f1"]].isna().all()
    assert report.loc["d", "support"] == 0
    assert math.isclose(report.loc["accuracy", "f1"], 4 / 6)
    assert report.loc["accuracy", ["precision", "recall"]].isna().all()


def test_classification_report_zero_division_and_scores():
    # class 1 occurs twice but is never predicted: precision 0 (not NaN), recall 0, F1 0
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])  # argmax: always class 0
    report = metrics.classification_report([0, 1, 1], scores, ["x", "y"])
    np.testing.assert_allclose(report.loc["y"].to_numpy(dtype=float), [0, 0, 0, 2])
    np.testing.assert_allclose(report.loc["x", ["precision", "recall"]].to_numpy(dtype=float),
                               [1 / 3, 1])
    np.testing.assert_allclose(report.loc["macro avg", "f1"], (0.5 + 0) / 2)


def test_ccc_identical_negated_and_hand_computed():
    x = np.array([-1.0, 0.0, 1.0, 2.0, -2.0])
    assert math.isclose(metrics.ccc(x, x), 1.0)
    assert math.isclose(metrics.ccc(x, -x), -1.0)
    assert math.isclose(metrics.ccc([1, 2, 3], [2, 4, 6]), 8 / 22)
    assert math.isclose(metrics.ccc([1, 2, 3, np.nan], [2, 4, 6, 9]), 8 / 22)
    assert math.isnan(metrics.ccc([1.0], [1.0]))


def test_plot_confusion_matrix_writes_a_png(tmp_path):
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, n_classes=4)
    path = metrics.plot_confusion_matrix(cm, CLASSES, tmp_path / "plots" / "cm.png", "val")
    data = (tmp_path / "plots" / "cm.png").read_bytes()
    assert path == str(tmp_path / "plots" / "cm.png")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(tmp_path / "plots" / "cm.png") as image:
        image.verify()
    with Image.open(tmp_path / "plots" / "cm.png") as image:
        assert image.format == "PNG" and min(image.size) >= 300
    with pytest.raises(ValueError):
        metrics.plot_confusion_matrix(cm, CLASSES[:3], tmp_path / "x.png")


def test_evaluation_report_flat_names():
    valence_true = [0.1, 0.5, -0.3, np.nan]
    report = metrics.evaluation_report(
        Y_TRUE, Y_PRED, CLASSES, prefix="val", valence_true=valence_true,
        valence_pred=[0.1, 0.5, -0.3, 0.9], arousal_true=[0.2, np.nan, np.nan, np.nan],
        arousal_pred=[0.1, 0.2, 0.3, 0.4])
    assert math.isclose(report["val_accuracy"], 4 / 6)
    assert math.isclose(report["val_macro_f1"], 13 / 18)
    assert math.isclose(report["val_weighted_f1"], 2 / 3)
    assert math.isclose(report["val_f1_b"], 2 / 3)
    assert math.isclose(report["val_recall_a"], 1 / 2)
    assert math.isclose(report["val_ccc_valence"], 1.0)
    assert report["val_n"] == 6
    # undefined: class d's metrics, arousal CCC over one value
    assert "val_f1_d" not in report and "val_ccc_arousal" not in report
    assert all(isinstance(v, float) and math.isfinite(v) for v in report.values())
    assert all(name.startswith("val_") for name in report)


def test_evaluation_report_emotion_names():
    report = metrics.evaluation_report([3, 3, 6], [3, 6, 6], prefix="test")
    assert math.isclose(report["test_f1_happy"], 2 / 3)  # P 1, R 1/2
    assert math.isclose(report["test_f1_neutral"], 2 / 3)  # P 1/2, R 1
    with pytest.raises(ValueError):
        metrics.evaluation_report([0], None)
