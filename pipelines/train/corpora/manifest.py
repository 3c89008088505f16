"""Generic manifests: a table of media URIs with labels, windows, subjects and splits."""

from __future__ import annotations

import logging
import math
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from operators.io.files import StorageOptions, open_fs
from operators.schema import AROUSAL, EMOTIONS, URI, VALENCE
from pipelines.train.corpora.listing import file_uri
from pipelines.train.table import (
    EMOTION_ALIASES,
    EMOTION_INDEX,
    END_S,
    LABEL,
    LABEL_DIST,
    N_CLASSES,
    NO_LABEL,
    SPLIT,
    SPLITS,
    START_S,
    SUBJECT,
    sample_table,
)

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = ("uri", "start", "end", "start_s", "end_s", "label",
                                     "label_dist", "valence", "arousal", "subject", "split")


def _parse_labels(values: pd.Series, source: str) -> np.ndarray:
    """Label cells (EMOTIONS names/aliases, indices 0–6, or empty) as EMOTIONS indices."""
    out = np.full(len(values), NO_LABEL, dtype=np.int64)
    bad: dict[str, int] = {}
    for row, value in enumerate(values.tolist()):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        text = str(value).strip()
        if text == "":
            continue
        if isinstance(value, (int, np.integer, float, np.floating)) or text.isdigit():
            number = float(text)
            if number.is_integer() and 0 <= number < N_CLASSES:
                out[row] = int(number)
                continue
        elif text.lower() in EMOTION_ALIASES:
            out[row] = EMOTION_INDEX[EMOTION_ALIASES[text.lower()]]
            continue
        bad.setdefault(text, row)
    if bad:
        examples = ", ".join(f"{value!r} (row {row})" for value, row in list(bad.items())[:5])
        raise ValueError(f"{source}: unknown label(s) {examples}; expected an index 0–"
                         f"{N_CLASSES - 1}, one of {list(EMOTIONS)} or an alias "
                         f"{sorted(set(EMOTION_ALIASES) - set(EMOTIONS))}")
    return out


def _resolve(entry: str, base: str) -> str:
    """A manifest entry as a URI: relative paths are relative to the manifest's folder."""
    if "://" in entry or entry.startswith("/"):
        return entry
    return f"{base.rstrip('/')}/{entry}"


def read_manifest(uri: str, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """A generic manifest (Parquet, or CSV optionally ``.gz``; chosen by extension).

    Columns (:data:`MANIFEST_COLUMNS`): ``uri`` (required; relative paths are resolved against
    the manifest's folder); ``start``/``end`` or ``start_s``/``end_s`` (seconds, empty = whole
    file); ``label`` (an EMOTIONS name or alias in any case, or an index 0–6; empty = no label),
    ``label_dist`` (Parquet: 7 weights per row, or null), ``valence``/``arousal`` (in [-1, 1],
    empty = absent), ``subject``, ``split`` (train/val/test or empty).  At least one of
    ``label``, ``label_dist``, ``valence``, ``arousal`` is required.  Raises ValueError naming
    the problem for unknown columns (a misspelt ``lable`` would otherwise silently lose the
    labels), unknown labels or splits, values out of range, and windows with ``end <= start``.
    """
    fs, path = open_fs(uri, storage_options or {})
    name = PurePosixPath(path).name.lower()
    with fs.open(path, "rb", compression="infer") as handle:
        if name.endswith((".parquet", ".pq")):
            raw = pd.read_parquet(handle)
        elif name.endswith((".csv", ".csv.gz")):
            raw = pd.read_csv(handle)
        else:
            raise ValueError(f"{uri}: a manifest is .parquet/.pq or .csv/.csv.gz")
    unknown = [c for c in raw.columns if c not in MANIFEST_COLUMNS]
    if unknown:
        raise ValueError(f"{uri}: unknown manifest columns {unknown}; allowed: "
                         f"{list(MANIFEST_COLUMNS)}")
    if "uri" not in raw.columns:
        raise ValueError(f"{uri}: a manifest needs a 'uri' column")
    if not {"label", "label_dist", "valence", "arousal"} & set(raw.columns):
        raise ValueError(f"{uri}: a manifest needs 'label', 'label_dist' and/or "
                         "'valence'/'arousal' columns")
    for short, long in (("start", START_S), ("end", END_S)):
        if short in raw.columns and long in raw.columns:
            raise ValueError(f"{uri}: give either '{short}' or '{long}', not both")
        if short in raw.columns:
            raw = raw.rename(columns={short: long})
    empty = raw["uri"].isna().to_numpy() | (raw["uri"].astype(str).str.strip() == "").to_numpy()
    if empty.any():
        raise ValueError(f"{uri}: empty 'uri' in row {int(np.flatnonzero(empty)[0])}")

    base = file_uri(fs, str(PurePosixPath(path).parent))
    columns: dict[str, Any] = {URI: [_resolve(str(e).strip(), base) for e in raw["uri"]]}
    if "label" in raw.columns:
        columns[LABEL] = _parse_labels(raw["label"], uri)
    if "label_dist" in raw.columns:
        columns[LABEL_DIST] = [_label_dist(value, uri, row)
                               for row, value in enumerate(raw["label_dist"].tolist())]
    for name in (VALENCE, AROUSAL, START_S, END_S):
        if name in raw.columns:
            try:
                columns[name] = pd.to_numeric(raw[name]).to_numpy(dtype=np.float64)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{uri}: column {name!r} must be numbers: {exc}") from exc
    for name in (VALENCE, AROUSAL):
        values = columns.get(name)
        if values is not None and (np.abs(values[~np.isnan(values)]) > 1).any():
            raise ValueError(f"{uri}: {name} must be in [-1, 1] (rescale other scales first)")
    start = columns.get(START_S, np.full(len(raw), np.nan))
    end = columns.get(END_S, np.full(len(raw), np.nan))
    if (start < 0).any() or (end <= np.nan_to_num(start, nan=0.0)).any():
        raise ValueError(f"{uri}: windows need 0 <= start < end")
    if "subject" in raw.columns:
        columns[SUBJECT] = [_subject_id(s) for s in raw["subject"]]
    if "split" in raw.columns:
        splits = [None if pd.isna(s) or str(s).strip() == "" else str(s).strip().lower()
                  for s in raw["split"]]
        wrong = sorted({s for s in splits if s is not None and s not in SPLITS})
        if wrong:
            raise ValueError(f"{uri}: unknown split values {wrong}; expected {list(SPLITS)}")
        columns[SPLIT] = splits
    frame = sample_table(len(raw), columns)
    logger.info("read %d manifest rows from %s", len(frame), uri)
    return frame


def _subject_id(value: Any) -> str | None:
    """A manifest subject cell as an id; numbers read as 7.0 (a CSV column with gaps) → "7"."""
    if pd.isna(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _label_dist(value: Any, source: str, row: int) -> np.ndarray | None:
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    dist = np.asarray(value, dtype=np.float32)
    if dist.shape != (N_CLASSES,) or (dist < 0).any() or not dist.sum() > 0:
        raise ValueError(f"{source}: label_dist in row {row} needs {N_CLASSES} non-negative "
                         "weights with a positive sum")
    return dist
