"""Helpers for Ray Data numpy batches whose cells hold per-row arrays of varying length."""

from __future__ import annotations

import numpy as np


def ragged(values: list[np.ndarray]) -> np.ndarray:
    """Object array of per-row arrays: Ray stores it as a variable-shaped tensor column."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
