"""Helpers for Ray Data numpy batches whose cells hold per-row arrays of varying length."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from operators import schema as S
from operators.step import Step


def ragged(values: list[np.ndarray]) -> np.ndarray:
    """Object array of per-row arrays: Ray stores it as a variable-shaped tensor column."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def to_list_columns(batch: dict[str, np.ndarray]) -> pa.Table:
    """Ray Data step before a shuffle: per-row arrays become flat Arrow ``list`` columns.

    Ray stores per-row arrays as tensor columns, fixed-shape in a block where all rows agree
    and variable-shaped elsewhere; the hash shuffle cannot concatenate blocks of both kinds.
    Flat lists have one type everywhere; readers restore the trailing dimensions, which the
    data contract fixes (e.g. 4 per face box).  Scalar columns pass through unchanged.
    """
    columns = {}
    for name, values in batch.items():
        # Ray gives an (rows, …) array when every row's array has the same shape, else an
        # object array of per-row arrays.
        if values.ndim > 1 or (values.dtype == object and len(values)
                               and isinstance(values[0], np.ndarray)):
            flat = [np.ravel(v) for v in values]
            # The declared type, else the arrays' own (empty ones keep their dtype), so
            # every block agrees (int32 frame indices…).
            kind = (S.CHUNK_SCHEMA.field(name).type if name in S.CHUNK_SCHEMA.names
                    else pa.list_(pa.from_numpy_dtype(flat[0].dtype)))
            columns[name] = pa.array(flat, type=kind)
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


class ToListColumns(Step):
    """Before the shuffle: chunk rows as an Arrow table of flat lists (:func:`to_list_columns`),
    so every block the hash shuffle concatenates has one schema.  Reads and writes no
    column; small rows (frames and crops are gone by now)."""

    name = "to_list_columns"

    def process(self, batch: dict[str, np.ndarray]) -> pa.Table:
        return to_list_columns(batch)
