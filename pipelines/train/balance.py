"""Class balance: reciprocal-frequency loss weights and re-sampling of rare classes."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch

from operators.schema import EMOTIONS
from pipelines.train.table import (
    LABEL,
    N_CLASSES,
)

logger = logging.getLogger(__name__)

def class_weights(labels: Iterable[Any] | np.ndarray | torch.Tensor,
                  n_classes: int = N_CLASSES) -> torch.Tensor:
    """Per-class loss weights from reciprocal frequency: ``w_c = N / (K · n_c)``.

    N = labelled samples, K = classes that occur, n_c = samples of class c, so the weights
    average to 1 over the samples (the loss keeps its scale) and every class present weighs
    the same in total.  Classes that never occur get 0 (there is nothing to weigh; logged).
    Absent labels (negative or NaN) are ignored.  Returns float32 (n_classes,).  Raises
    ValueError for a label >= n_classes or no labelled sample at all.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    values = np.asarray(labels, dtype=np.float64)
    values = values[~np.isnan(values) & (values >= 0)].astype(np.int64)
    if values.size == 0:
        raise ValueError("class weights need at least one labelled sample")
    if values.max() >= n_classes:
        raise ValueError(f"label {int(values.max())} is not below n_classes={n_classes}")
    counts = np.bincount(values, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = values.size / (present.sum() * counts[present])
    if not present.all():
        logger.info("class weights: classes %s have no samples, weight 0",
                    np.flatnonzero(~present).tolist())
    return torch.tensor(weights, dtype=torch.float32)


def oversample_rare(frame: pd.DataFrame, target_ratio: float = 0.5, max_factor: float = 5.0,
                    seed: int = 0) -> pd.DataFrame:
    """Re-sample rare classes' rows (clips or windows) so that each labelled class has at least
    ``target_ratio`` × the largest class's count, growing no class beyond ``max_factor`` × its
    own count (so 500 disgust faces do not become 10,000 copies of the same 500).

    Repeats are spread evenly: a class first gets whole copies of all its rows, then a sample
    without replacement (``seed``) for the remainder, so the repeat counts of a class's rows
    differ by at most one.  Rows without a label are kept once.  Returns the original rows
    followed by the repeats, with a fresh index.  Apply it to training rows only: repeating
    validation rows would bias its metrics; pair it with augmentation so repeats are not
    identical inputs.
    """
    if not 0 < target_ratio <= 1 or max_factor < 1:
        raise ValueError("need 0 < target_ratio <= 1 and max_factor >= 1")
    labels = frame[LABEL].to_numpy()
    counts = np.bincount(labels[labels >= 0], minlength=N_CLASSES)
    if counts.sum() == 0:
        return frame.reset_index(drop=True)
    goal = math.ceil(target_ratio * counts.max())
    rng = np.random.default_rng(seed)
    extra_rows = []
    added = {}
    for cls in np.flatnonzero(counts):
        n = int(counts[cls])
        extra = min(goal, math.floor(max_factor * n)) - n
        if extra <= 0:
            continue
        rows = np.flatnonzero(labels == cls)
        repeats = np.concatenate([np.tile(rows, extra // n),
                                  rng.choice(rows, extra % n, replace=False)])
        extra_rows.append(np.sort(repeats))
        added[EMOTIONS[cls]] = extra
    if not extra_rows:
        return frame.reset_index(drop=True)
    logger.info("oversampled rare classes (rows added): %s", added)
    index = np.concatenate([np.arange(len(frame)), *extra_rows])
    return frame.iloc[index].reset_index(drop=True)
