"""The sample table: one row per labelled sample, the form every corpus adapter returns.

Columns :data:`COLUMNS`, in this order:

* ``uri``: the media file (local absolute path, or ``protocol://…``); missing for FER2013,
  whose images are inline in ``pixels`` (:mod:`pipelines.train.corpora.fer2013`);
* ``label``: index into :data:`operators.schema.EMOTIONS`, :data:`NO_LABEL` (-1) when absent;
* ``label_dist``: 7 float32 target weights over EMOTIONS (FER+ schemes, manifests), else None;
* ``valence``, ``arousal``: floats in [-1, 1], NaN when the corpus has none;
* ``subject``: who is recorded, ``"<corpus>:<id>"`` (e.g. ``ravdess:17``), missing when
  unknown; splits are made on this column, never on clips
  (:func:`pipelines.train.splits.split_by_subject`);
* ``split``: ``train``/``val``/``test`` where the corpus defines one, else missing;
* ``start_s``, ``end_s``: the window inside the file in seconds; NaN = the whole file.

Adapters append corpus-specific columns after these (documented on each).

Class names (AffectNet-style folders, manifests) map onto the 7 FER2013 classes
case-insensitively, with the synonyms in :data:`EMOTION_ALIASES` (anger, happiness, surprised,
…; calm → neutral as for RAVDESS).  Contempt is not one of the 7 classes: ``contempt="drop"``
(default) leaves its samples out, ``contempt="disgust"`` merges it into disgust (the nearest
class: both are rejection expressions, and FER2013 itself was labelled without a contempt
class).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from operators.schema import AROUSAL, EMOTIONS, URI, VALENCE

LABEL = "label"
LABEL_DIST = "label_dist"
SUBJECT = "subject"
SPLIT = "split"
START_S = "start_s"
END_S = "end_s"
COLUMNS: tuple[str, ...] = (URI, LABEL, LABEL_DIST, VALENCE, AROUSAL, SUBJECT, SPLIT, START_S,
                            END_S)
"""Columns every adapter returns, in this order (FER2013 adds ``pixels``)."""

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS: tuple[str, ...] = (TRAIN, VAL, TEST)
NO_LABEL = -1
"""``label`` of a sample without a categorical label (the losses skip it)."""

N_CLASSES = len(EMOTIONS)
EMOTION_INDEX = {name: i for i, name in enumerate(EMOTIONS)}

EMOTION_ALIASES: dict[str, str] = {
    **{name: name for name in EMOTIONS},
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "calm": "neutral",
}
"""Accepted class names (lower case) → :data:`EMOTIONS` name.  ``contempt`` is handled apart."""

ContemptPolicy = Literal["drop", "disgust"]


def sample_table(n: int, columns: Mapping[str, Any], extra: Mapping[str, Any] | None = None
                 ) -> pd.DataFrame:
    """A table of ``n`` rows with :data:`COLUMNS` (defaults: absent) plus ``extra`` columns."""
    defaults: dict[str, Any] = {
        URI: [None] * n,
        LABEL: np.full(n, NO_LABEL, dtype=np.int64),
        LABEL_DIST: [None] * n,
        VALENCE: np.full(n, np.nan),
        AROUSAL: np.full(n, np.nan),
        SUBJECT: [None] * n,
        SPLIT: [None] * n,
        START_S: np.full(n, np.nan),
        END_S: np.full(n, np.nan),
    }
    data = {name: columns.get(name, default) for name, default in defaults.items()}
    unknown = set(columns) - set(defaults)
    if unknown:
        raise ValueError(f"not schema columns: {sorted(unknown)}")  # a bug in this module
    frame = pd.DataFrame(data)
    frame[LABEL] = frame[LABEL].astype(np.int64)
    frame[LABEL_DIST] = pd.Series(list(data[LABEL_DIST]), dtype=object)
    for name, values in (extra or {}).items():
        frame[name] = values
    return frame


def table_from_records(records: list[dict[str, Any]], extra: tuple[str, ...]) -> pd.DataFrame:
    """A table from per-file records holding ``uri``, ``label``, ``subject`` and ``extra``."""
    table = pd.DataFrame.from_records(records, columns=[URI, LABEL, SUBJECT, *extra])
    return sample_table(len(table), {URI: table[URI].tolist(),
                                     LABEL: table[LABEL].to_numpy(dtype=np.int64),
                                     SUBJECT: table[SUBJECT].tolist()},
                        {name: table[name].to_numpy() for name in extra})


def emotion_index(name: str, contempt: ContemptPolicy = "drop") -> int | None:
    """EMOTIONS index of a class name (aliases, any case); None for dropped contempt.

    Raises KeyError for a name that is neither an emotion, an alias nor contempt."""
    key = name.strip().lower()
    if key == "contempt":
        return EMOTION_INDEX["disgust"] if contempt == "disgust" else None
    return EMOTION_INDEX[EMOTION_ALIASES[key]]


def check_contempt(contempt: str) -> None:
    """Raises ValueError unless ``contempt`` is a :data:`ContemptPolicy`."""
    if contempt not in ("drop", "disgust"):
        raise ValueError(f"contempt must be 'drop' or 'disgust', got {contempt!r}")
