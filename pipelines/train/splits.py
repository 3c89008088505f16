"""Splits by subject: all of a person's samples in one split, never split by clip."""

from __future__ import annotations

import logging
from collections.abc import Collection

import numpy as np
import pandas as pd

from pipelines.train.table import (
    SPLIT,
    SUBJECT,
    TEST,
    TRAIN,
    VAL,
)

logger = logging.getLogger(__name__)

def _pick(spec: float | Collection[str], order: list[str], known: set[str], role: str,
          n_subjects: int) -> list[str]:
    """Subjects for one split: the given ids (checked), or the next share of ``order``."""
    if isinstance(spec, str):
        raise TypeError(f"{role}_subjects is a collection of subject ids or a fraction, "
                        f"not the string {spec!r}")
    if isinstance(spec, (int, float)):
        if not 0 <= spec < 1:
            raise ValueError(f"{role}_subjects as a fraction must be in [0, 1), got {spec}")
        count = round(spec * n_subjects)
        return order[: max(count, 1 if spec > 0 else 0)]
    chosen = [str(s) for s in spec]
    missing = sorted(set(chosen) - known)
    if missing:
        raise ValueError(f"{role} subjects {missing} do not occur in the table")
    return chosen


def split_by_subject(frame: pd.DataFrame, val_subjects: float | Collection[str] = 0.2,
                     test_subjects: float | Collection[str] = 0.0, seed: int = 0
                     ) -> pd.DataFrame:
    """Assign ``split`` by subject, never by clip: all of a person's samples share a split, so
    validation measures generalisation to unseen people (the use case: new participants).

    Each of ``val_subjects``/``test_subjects`` is either a collection of subject ids or a
    fraction of the distinct subjects (rounded, at least one when > 0) drawn in a permutation
    fixed by ``seed`` (test first, then val from the rest).  Every other subject is train.
    Returns a copy with ``split`` replaced.  Raises ValueError for rows without a subject, ids
    not in the table, a subject given to both, or no subject left for training.
    """
    subjects = frame[SUBJECT]
    if subjects.isna().any():
        raise ValueError(f"{int(subjects.isna().sum())} rows have no subject: a split by "
                         "subject cannot place them (use the corpus's own split)")
    unique = sorted(subjects.astype(str).unique())
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    known = set(unique)
    test = _pick(test_subjects, order, known, "test", len(unique))
    rest = [s for s in order if s not in set(test)]
    val = _pick(val_subjects, rest, known, "val", len(unique))
    if set(val) & set(test):
        raise ValueError(f"subjects in both val and test: {sorted(set(val) & set(test))}")
    if not known - set(val) - set(test):
        raise ValueError("no subject left for training")
    split = np.full(len(frame), TRAIN, dtype=object)
    split[subjects.astype(str).isin(val).to_numpy()] = VAL
    split[subjects.astype(str).isin(test).to_numpy()] = TEST
    out = frame.copy()
    out[SPLIT] = split
    logger.info("split by subject (seed %d): %d train, %d val, %d test subjects", seed,
                len(known) - len(val) - len(test), len(val), len(test))
    return out
