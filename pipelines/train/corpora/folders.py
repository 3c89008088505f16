"""AffectNet-style folder trees of face images: the class (and split) named by the folders."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from operators.io.files import StorageOptions
from operators.schema import URI
from pipelines.train.corpora.listing import IMAGE_EXTENSIONS, list_files
from pipelines.train.table import (
    EMOTION_ALIASES,
    LABEL,
    SPLIT,
    TEST,
    TRAIN,
    VAL,
    ContemptPolicy,
    check_contempt,
    emotion_index,
    sample_table,
)

logger = logging.getLogger(__name__)

_SPLIT_FOLDERS = {"train": TRAIN, "training": TRAIN, "val": VAL, "valid": VAL,
                  "validation": VAL, "test": TEST, "testing": TEST}
_NON_EMOTION_FOLDERS = frozenset({"none", "uncertain", "unknown", "noface", "no-face", "no_face",
                                  "non-face", "nf"})
"""AffectNet's non-emotion categories (None, Uncertain, No-Face): their images are left out."""


def read_image_folders(root: str, contempt: ContemptPolicy = "drop",
                       storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """An AffectNet-style tree of face images: ``root/<class>/<image>`` or
    ``root/<split>/<class>/<image>``.

    Class folders are named for their class, in any case, with the synonyms of
    :data:`EMOTION_ALIASES` (``Anger``, ``happiness``, ``Surprised`` …).  ``contempt``
    (AffectNet's 8th class) is dropped or merged into disgust (see the module docstring);
    AffectNet's non-emotion folders (None, Uncertain, No-Face …) are left out.  Split folders
    ``train``/``training``, ``val``/``valid``/``validation``, ``test``/``testing`` set
    ``split``; without them the split is missing.  Only :data:`IMAGE_EXTENSIONS` files count;
    files directly under a split or the root are ignored (logged).  ``subject`` is missing
    (AffectNet names no people).  Raises ValueError for a folder name that is not a class, and
    for a root that mixes split and class folders.

    Extra column: ``class_folder`` (the folder name as found).
    """
    check_contempt(contempt)
    files = [(uri, rel) for uri, rel in list_files(root, storage_options)
             if rel.suffix.lower() in IMAGE_EXTENSIONS]
    top = {rel.parts[0].lower() for _, rel in files if len(rel.parts) > 1}
    split_level = bool(top & set(_SPLIT_FOLDERS))
    if split_level and not top <= set(_SPLIT_FOLDERS):
        raise ValueError(f"{root}: top-level folders mix splits and classes: {sorted(top)}")
    depth = 3 if split_level else 2

    uris, labels, splits, folders = [], [], [], []
    unknown: set[str] = set()
    left_out: dict[str, int] = {}
    ignored = 0
    for uri, rel in files:
        if len(rel.parts) != depth:
            ignored += 1
            continue
        folder = rel.parts[-2]
        key = folder.strip().lower()
        if key in _NON_EMOTION_FOLDERS:
            left_out[folder] = left_out.get(folder, 0) + 1
            continue
        try:
            index = emotion_index(folder, contempt)
        except KeyError:
            unknown.add(folder)
            continue
        if index is None:
            left_out[folder] = left_out.get(folder, 0) + 1
            continue
        uris.append(uri)
        labels.append(index)
        splits.append(_SPLIT_FOLDERS[rel.parts[0].lower()] if split_level else None)
        folders.append(folder)
    if unknown:
        raise ValueError(f"{root}: folders {sorted(unknown)} are not emotion classes; expected "
                         f"{sorted(EMOTION_ALIASES)} or contempt (any case)")
    if left_out:
        logger.info("image folders: left out %s (not one of the 7 classes)", left_out)
    if ignored:
        logger.info("image folders: ignored %d image(s) outside class folders", ignored)
    return sample_table(len(uris), {URI: uris, LABEL: np.array(labels, dtype=np.int64),
                                    SPLIT: splits}, {"class_folder": folders})
