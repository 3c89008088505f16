"""Splits by subject (pipelines/train/splits.py): subject-disjoint, seeded, checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from operators.schema import EMOTIONS
from pipelines.train.splits import split_by_subject
from pipelines.train.table import LABEL, SPLIT, SUBJECT, sample_table


def _people(n_subjects: int, clips_each: int) -> pd.DataFrame:
    subjects = [f"x:{s:02d}" for s in range(n_subjects) for _ in range(clips_each)]
    labels = np.arange(len(subjects)) % len(EMOTIONS)
    return sample_table(len(subjects), {SUBJECT: subjects, LABEL: labels})


def test_split_by_subject_fractions_are_subject_disjoint_and_seeded():
    frame = _people(20, 5)
    first = split_by_subject(frame, val_subjects=0.2, test_subjects=0.1, seed=1)
    groups = first.groupby(SPLIT)[SUBJECT].agg(set)
    assert {k: len(v) for k, v in groups.items()} == {"train": 14, "val": 4, "test": 2}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"]
                or groups["val"] & groups["test"])
    assert (first.groupby(SUBJECT)[SPLIT].nunique() == 1).all()  # never by clip
    again = split_by_subject(frame, val_subjects=0.2, test_subjects=0.1, seed=1)
    assert first[SPLIT].tolist() == again[SPLIT].tolist()
    other = split_by_subject(frame, val_subjects=0.2, test_subjects=0.1, seed=2)
    assert first[SPLIT].tolist() != other[SPLIT].tolist()
    assert frame[SPLIT].isna().all()  # the input is not modified


def test_split_by_subject_explicit_ids_and_errors():
    frame = _people(4, 2)
    split = split_by_subject(frame, val_subjects=["x:01"], test_subjects=["x:03"])
    assert split.groupby(SUBJECT)[SPLIT].first().to_dict() == {
        "x:00": "train", "x:01": "val", "x:02": "train", "x:03": "test"}
    with pytest.raises(ValueError, match="do not occur"):
        split_by_subject(frame, val_subjects=["x:09"])
    with pytest.raises(ValueError, match="both val and test"):
        split_by_subject(frame, val_subjects=["x:01"], test_subjects=["x:01"])
    with pytest.raises(ValueError, match="no subject left"):
        split_by_subject(frame, val_subjects=["x:00", "x:01"], test_subjects=["x:02", "x:03"])
    with pytest.raises(TypeError):
        split_by_subject(frame, val_subjects="x:01")
    with pytest.raises(ValueError, match="no subject"):
        split_by_subject(frame.assign(subject=None))
