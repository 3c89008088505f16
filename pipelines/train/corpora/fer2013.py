"""FER2013 (Goodfellow et al. 2013): the challenge's CSV of 48×48 grey faces as a sample table."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from operators.io.files import StorageOptions, open_fs
from pipelines.train.table import (
    LABEL,
    N_CLASSES,
    SPLIT,
    TEST,
    TRAIN,
    VAL,
    sample_table,
)

logger = logging.getLogger(__name__)

PIXELS = "pixels"
"""FER2013's extra column: the image as its CSV cell (decode with :func:`fer_pixels_to_image`)."""
FER_SIZE = 48
FER_USAGE: dict[str, str] = {"Training": TRAIN, "PublicTest": VAL, "PrivateTest": TEST}
"""FER2013 ``Usage`` → split: the challenge's public test set is the validation set."""


def read_fer2013(uri: str, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """FER2013's CSV (``emotion,pixels,Usage``; ``.gz`` or plain) as a training table.

    ``emotion`` 0–6 is already the :data:`~operators.schema.EMOTIONS` index; ``Usage``
    Training/PublicTest/PrivateTest becomes split train/val/test (:data:`FER_USAGE`).  Files
    without ``emotion`` (the challenge's unlabelled test file) give
    :data:`~pipelines.train.table.NO_LABEL`, without ``Usage`` a missing split.  ``pixels``
    keeps the corpus's text cells (2,304 space-separated grey values): decoding them with
    :func:`fer_pixels_to_image` is the data loader's job, where it runs per batch in parallel
    workers.  ``uri`` and ``subject`` are missing (FER2013 names no people).
    Raises ValueError on a missing ``pixels`` column, an emotion outside 0–6 or an unknown
    Usage.
    """
    fs, path = open_fs(uri, storage_options or {})
    with fs.open(path, "rb", compression="infer") as handle:
        raw = pd.read_csv(handle)
    if PIXELS not in raw.columns:
        raise ValueError(f"{uri}: FER2013 CSV needs a 'pixels' column, has {list(raw.columns)}")
    n = len(raw)
    columns: dict[str, Any] = {}
    if "emotion" in raw.columns:
        emotion = raw["emotion"].to_numpy()
        bad = ~np.isin(emotion, np.arange(N_CLASSES))
        if bad.any():
            raise ValueError(f"{uri}: emotion must be 0–6, row {int(np.flatnonzero(bad)[0])} "
                             f"has {emotion[bad][0]!r}")
        columns[LABEL] = emotion.astype(np.int64)
    if "Usage" in raw.columns:
        usage = raw["Usage"].astype(str)
        unknown = sorted(set(usage) - set(FER_USAGE))
        if unknown:
            raise ValueError(f"{uri}: unknown Usage values {unknown}; expected {list(FER_USAGE)}")
        columns[SPLIT] = usage.map(FER_USAGE).to_numpy(dtype=object)
    frame = sample_table(n, columns, {PIXELS: raw[PIXELS].astype(str).to_numpy(dtype=object)})
    logger.info("read %d FER2013 rows from %s", n, uri)
    return frame


def fer_pixels_to_image(pixels: str) -> np.ndarray:
    """One FER2013 ``pixels`` cell as a ``uint8`` (48, 48) grey image (row-major, top row first).

    Raises ValueError unless the cell holds exactly 2,304 integers in 0–255.
    """
    values = np.array(pixels.split(), dtype=np.int64)
    if values.size != FER_SIZE * FER_SIZE:
        raise ValueError(f"a FER2013 image has {FER_SIZE * FER_SIZE} pixels, got {values.size}")
    if values.min() < 0 or values.max() > 255:
        raise ValueError("FER2013 pixels must be in 0–255")
    return values.astype(np.uint8).reshape(FER_SIZE, FER_SIZE)
