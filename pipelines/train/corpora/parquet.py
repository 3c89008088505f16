"""Prepared samples: the Parquet shards ``emoray prepare`` writes and training reads.

One row per sample: the task's inputs, then the targets and provenance of the sample table
(``pipelines.train.table``) and ``error``.  Inputs per task:

* face: :data:`IMAGE`, PNG bytes of a face crop (any size, at most :data:`MAX_IMAGE_SIDE`);
* voice: ``audio`` (:data:`operators.schema.AUDIO`), a 16 kHz mono float32 window or
  utterance;
* fusion: :data:`FACE_FEATURES` (T×Df), :data:`FACE_MASK` (T), :data:`VOICE_FEATURES` (R×Dv),
  :data:`VOICE_MASK`, :data:`SPEAKING`: what the face and voice models give for one window;
* temporal: :data:`FEATURES` (L×D per clip, in time order) with per-window targets as lists
  (``label``, ``valence``, ``arousal``).

Face and voice shards have :func:`prepared_schema`; fusion and temporal samples are model
features, written by whoever computes them (e.g. :mod:`pipelines.train.paired`) with these
column names.  A sample that could not be decoded is a row with ``error`` set and null inputs;
:func:`read_prepared` leaves such rows out.
"""

from __future__ import annotations

import io
import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from operators.io.files import StorageOptions, open_fs
from operators.schema import AROUSAL, AUDIO, URI, VALENCE
from pipelines.train.corpora.ferplus import VOTE_DIST
from pipelines.train.table import END_S, LABEL, LABEL_DIST, NO_LABEL, SPLIT, START_S, SUBJECT

logger = logging.getLogger(__name__)

IMAGE = "image"
FACE_FEATURES, FACE_MASK = "face_features", "face_mask"
VOICE_FEATURES, VOICE_MASK, SPEAKING = "voice_features", "voice_mask", "speaking"
FEATURES = "features"
ERROR = "error"
MAX_IMAGE_SIDE = 128  # above every face network's input (112 px at most): keeps shards small

_TARGETS = pa.schema([
    (LABEL, pa.int64()), (LABEL_DIST, pa.list_(pa.float32())),
    (VOTE_DIST, pa.list_(pa.float32())), (VALENCE, pa.float64()), (AROUSAL, pa.float64()),
    (SUBJECT, pa.string()), (SPLIT, pa.string()), (URI, pa.string()),
    (START_S, pa.float64()), (END_S, pa.float64()), (ERROR, pa.string()),
])


def prepared_schema(task: str) -> pa.Schema:
    """Columns of a prepared shard for ``task`` (face: ``image``; voice: ``audio``).  Raises
    ValueError for the fusion and temporal tasks, which train on model features."""
    if task == "face":
        inputs = [pa.field(IMAGE, pa.binary())]
    elif task == "voice":
        inputs = [pa.field(AUDIO, pa.list_(pa.float32()))]
    else:
        raise ValueError(f"the {task} task trains on model features: prepare its Parquet "
                         "with the face/voice models and use format: parquet")
    return pa.schema([*inputs, *_TARGETS])


def png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` (uint8 grey (H, W) or RGB (H, W, 3)) as PNG bytes, scaled down to at most
    :data:`MAX_IMAGE_SIDE` on the longer side."""
    image = Image.fromarray(pixels)
    if max(image.size) > MAX_IMAGE_SIDE:
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def float_list(value: Any) -> list[float] | None:
    """A vector cell (array, list) as a list of float32 values for Arrow; None stays None."""
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    return [float(v) for v in np.asarray(value, dtype=np.float32)]


def target_columns(rows: pd.DataFrame, starts: list[float] | None = None,
                   ends: list[float] | None = None) -> dict[str, list[Any]]:
    """The target and provenance columns of prepared rows (all but ``error``) from sample
    table ``rows``; columns the table lacks are absent (``NO_LABEL``, None, NaN).  ``starts``/
    ``ends`` replace the rows' window bounds (a sample cut from inside the window)."""
    def column(name: str, default: Any) -> list[Any]:
        return rows[name].tolist() if name in rows else [default] * len(rows)

    def text(values: list[Any]) -> list[str | None]:
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                for v in values]

    return {
        LABEL: [int(v) for v in column(LABEL, NO_LABEL)],
        LABEL_DIST: [float_list(v) for v in column(LABEL_DIST, None)],
        VOTE_DIST: [float_list(v) for v in column(VOTE_DIST, None)],
        VALENCE: [float(v) for v in column(VALENCE, math.nan)],
        AROUSAL: [float(v) for v in column(AROUSAL, math.nan)],
        SUBJECT: text(column(SUBJECT, None)), SPLIT: text(column(SPLIT, None)),
        URI: text(column(URI, None)),
        START_S: starts if starts is not None else [float(v) for v in column(START_S,
                                                                             math.nan)],
        END_S: ends if ends is not None else [float(v) for v in column(END_S, math.nan)],
    }


def read_prepared(uri: str, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """A prepared Parquet folder or file as pandas (shards in name order), without the rows
    that failed to decode (their count is logged).  Raises FileNotFoundError when ``uri``
    does not exist or holds no Parquet file."""
    fs, path = open_fs(uri, storage_options or {})
    if not fs.exists(path):
        raise FileNotFoundError(f"prepared data {uri!r} does not exist")
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet")) if fs.isdir(path) else [
        path]
    if not files:
        raise FileNotFoundError(f"no Parquet files under {uri!r}")
    tables = [pq.read_table(f, filesystem=fs) for f in files]
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    if ERROR in frame:
        bad = frame[ERROR].notna()
        if bad.any():
            logger.warning("%s: leaving out %d of %d samples that could not be decoded "
                           "(e.g. %s)", uri, int(bad.sum()), len(frame),
                           frame.loc[bad, ERROR].iloc[0])
            frame = frame[~bad].reset_index(drop=True)
    return frame
