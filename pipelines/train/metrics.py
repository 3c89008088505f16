"""Evaluation of emotion models: classification report, CCC, confusion matrix and its plot,
and one flat dict of metrics for experiment tracking (numpy, pandas, matplotlib; no MLflow).

Conventions (shared by every function here):

* ``y_true`` holds class indices; samples without a label (negative, as ``table.NO_LABEL``,
  or NaN) are left out.  ``y_pred`` holds class indices, or scores (N, C) whose argmax is taken.
* A class's precision is 0 when the model never predicts it but it occurs (sklearn's
  ``zero_division=0``).  A class that neither occurs nor is predicted has undefined metrics
  (NaN) and is left out of the macro average — it says nothing about the model (CREMA-D has
  no surprise, for instance) and would otherwise drag the average down by 1/C.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from operators.io.files import StorageOptions, open_fs
from operators.schema import EMOTIONS

logger = logging.getLogger(__name__)

REPORT_COLUMNS: tuple[str, ...] = ("precision", "recall", "f1", "support")
MACRO, WEIGHTED, ACCURACY = "macro avg", "weighted avg", "accuracy"


def _labelled(y_true: np.ndarray | Sequence[float], y_pred: np.ndarray | Sequence[float]
              ) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) int64 class indices of the labelled samples."""
    true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.float64)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1).astype(np.float64)
    pred = pred.reshape(-1)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} samples, y_pred {pred.size}")
    keep = ~np.isnan(true) & (true >= 0)
    return true[keep].astype(np.int64), pred[keep].astype(np.int64)


def confusion_matrix(y_true: np.ndarray | Sequence[float], y_pred: np.ndarray | Sequence[float],
                     n_classes: int = len(EMOTIONS)) -> np.ndarray:
    """Counts (n_classes, n_classes) int64: row = true class, column = predicted class.

    Raises ValueError for a class index outside [0, n_classes)."""
    true, pred = _labelled(y_true, y_pred)
    if true.size and (max(true.max(), pred.max()) >= n_classes or pred.min() < 0):
        raise ValueError(f"class indices must be in [0, {n_classes})")
    return np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def _per_class(cm: np.ndarray) -> pd.DataFrame:
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    undefined = (support == 0) & (predicted == 0)
    table = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1,
                          "support": support})
    table.loc[undefined, ["precision", "recall", "f1"]] = np.nan
    return table


def classification_report(y_true: np.ndarray | Sequence[float],
                          y_pred: np.ndarray | Sequence[float],
                          classes: Sequence[str] = EMOTIONS) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support, then ``macro avg`` (unweighted mean over
    the defined classes), ``weighted avg`` (weighted by support) and ``accuracy``.

    Index: the class names, then ``"macro avg"``, ``"weighted avg"``, ``"accuracy"``; columns
    :data:`REPORT_COLUMNS`.  As in sklearn's report, the accuracy row has the accuracy in
    ``f1`` (precision and recall NaN) and the sample count in ``support``.  Undefined values
    follow the module's conventions; with no labelled sample every metric is NaN.
    """
    cm = confusion_matrix(y_true, y_pred, len(classes))
    table = _per_class(cm)
    table.index = pd.Index(list(classes))
    total = float(cm.sum())
    defined = table["f1"].notna()
    metrics = ["precision", "recall", "f1"]
    macro = table.loc[defined, metrics].mean() if defined.any() else pd.Series(np.nan, metrics)
    weighted = ((table.loc[defined, metrics].mul(table.loc[defined, "support"], axis=0).sum()
                 / total) if total else pd.Series(np.nan, metrics))
    accuracy = np.trace(cm) / total if total else np.nan
    summary = pd.DataFrame(
        [[*macro.to_numpy(), total], [*weighted.to_numpy(), total],
         [np.nan, np.nan, accuracy, total]],
        index=[MACRO, WEIGHTED, ACCURACY], columns=list(REPORT_COLUMNS))
    report = pd.concat([table, summary])
    report["support"] = report["support"].astype(np.int64)
    return report


def ccc(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Lin's concordance correlation coefficient of two 1-D series (population moments):
    1 for identical series, −1 for ``y = −x`` around zero mean, 0 for unrelated ones.  Pairs
    with a NaN are left out; NaN when fewer than 2 pairs remain or both series are constant
    at the same value (0/0)."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"x has {a.size} values, y {b.size}")
    keep = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[keep], b[keep]
    if a.size < 2:
        return float("nan")
    cov = np.mean((a - a.mean()) * (b - b.mean()))
    denominator = a.var() + b.var() + (a.mean() - b.mean()) ** 2
    return float(2 * cov / denominator) if denominator > 0 else float("nan")


def plot_confusion_matrix(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str],
                          title: str | None = None,
                          storage_options: StorageOptions | None = None) -> str:
    """Write ``cm`` as a PNG heat map to ``path`` (local, or an fsspec URL with
    ``storage_options`` keyed by protocol) and return the path.

    Colours are row-normalised (each true class's recall spread, so rare classes are as
    readable as common ones); each cell is annotated with its count and row share.  Uses the
    Agg canvas directly, not pyplot: no global figure state, safe in worker threads.
    """
    cm = np.asarray(cm)
    if cm.shape != (len(classes), len(classes)):
        raise ValueError(f"cm is {cm.shape}, expected {(len(classes), len(classes))}")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    size = 1.0 + 0.75 * len(classes)
    figure = Figure(figsize=(size + 1.5, size), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    ticks = np.arange(len(classes))
    axes.set_xticks(ticks, labels=list(classes), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(classes))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title:
        axes.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            # dark text on light cells, light on dark: readable at every share
            colour = "white" if share[i, j] > 0.5 else "black"
            axes.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                      fontsize=8, color=colour)
    figure.tight_layout()
    target = os.fspath(path)
    fs, fs_path = open_fs(target, storage_options or {})
    fs.makedirs(str(PurePosixPath(fs_path).parent), exist_ok=True)
    with fs.open(fs_path, "wb") as handle:
        canvas.print_png(handle)
    logger.debug("wrote confusion matrix plot %s", target)
    return target


def _metric_name(text: str) -> str:
    # MLflow accepts letters, digits, _ - . / and spaces; keep names to the safe subset.
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", text.strip())


def evaluation_report(y_true: np.ndarray | Sequence[float] | None = None,
                      y_pred: np.ndarray | Sequence[float] | None = None,
                      classes: Sequence[str] = EMOTIONS, prefix: str = "val", *,
                      valence_true: np.ndarray | Sequence[float] | None = None,
                      valence_pred: np.ndarray | Sequence[float] | None = None,
                      arousal_true: np.ndarray | Sequence[float] | None = None,
                      arousal_pred: np.ndarray | Sequence[float] | None = None,
                      ) -> dict[str, float]:
    """Flat ``{name: float}`` metrics, ready for ``mlflow.log_metrics``.

    With ``y_true``/``y_pred`` (conventions in the module docstring): ``{prefix}_accuracy``,
    ``{prefix}_macro_f1``, ``{prefix}_macro_precision``, ``{prefix}_macro_recall``,
    ``{prefix}_weighted_f1``, ``{prefix}_n`` (labelled samples) and per class
    ``{prefix}_f1_<class>``, ``{prefix}_precision_<class>``, ``{prefix}_recall_<class>``
    (e.g. ``val_f1_happy``).  With valence/arousal pairs: ``{prefix}_ccc_valence``,
    ``{prefix}_ccc_arousal`` (NaN targets left out).  Undefined values (a class neither present
    nor predicted, a CCC over fewer than 2 values, no labelled sample) are left out instead
    of being logged as NaN, which would break metric charts.
    """
    metrics: dict[str, float] = {}
    if (y_true is None) != (y_pred is None):
        raise ValueError("give both y_true and y_pred, or neither")
    if y_true is not None and y_pred is not None:
        report = classification_report(y_true, y_pred, classes)
        metrics[f"{prefix}_n"] = float(report.loc[ACCURACY, "support"])
        metrics[f"{prefix}_accuracy"] = report.loc[ACCURACY, "f1"]
        for column in ("f1", "precision", "recall"):
            metrics[f"{prefix}_macro_{column}"] = report.loc[MACRO, column]
        metrics[f"{prefix}_weighted_f1"] = report.loc[WEIGHTED, "f1"]
        for name in classes:
            for column in ("f1", "precision", "recall"):
                metrics[f"{prefix}_{column}_{_metric_name(name)}"] = report.loc[name, column]
    for dimension, true, pred in (("valence", valence_true, valence_pred),
                                  ("arousal", arousal_true, arousal_pred)):
        if (true is None) != (pred is None):
            raise ValueError(f"give both {dimension}_true and {dimension}_pred, or neither")
        if true is not None and pred is not None:
            metrics[f"{prefix}_ccc_{dimension}"] = ccc(pred, true)
    return {name: float(value) for name, value in metrics.items() if not np.isnan(value)}
