"""FER+ (Barsoum et al. 2016): ten taggers' votes per FER2013 image, its four label schemes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from operators.io.files import StorageOptions, open_fs
from pipelines.train.corpora.fer2013 import FER_USAGE, read_fer2013
from pipelines.train.table import (
    EMOTION_INDEX,
    LABEL,
    LABEL_DIST,
    N_CLASSES,
    NO_LABEL,
    SPLIT,
    SPLITS,
    ContemptPolicy,
    check_contempt,
)

logger = logging.getLogger(__name__)

VOTE_DIST = "vote_dist"
"""FER+'s extra column: the emotion votes normalised to sum 1 (7 float32)."""
FERPLUS_VOTES: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger",
                                  "disgust", "fear", "contempt", "unknown", "NF")
"""Vote columns of ``fer2013new.csv``, in file order (10 taggers per image)."""
_FERPLUS_COLUMNS = ("Usage", "Image name", *FERPLUS_VOTES)
_FERPLUS_TO_EMOTIONS = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise",
                        "sadness": "sad", "anger": "angry", "disgust": "disgust", "fear": "fear"}
FerPlusScheme = Literal["majority", "multilabel", "probability", "crossentropy"]
FERPLUS_SCHEMES: tuple[str, ...] = ("majority", "multilabel", "probability", "crossentropy")


@dataclass(frozen=True)
class FerPlusTargets:
    """Targets for N FER+ vote rows (:func:`ferplus_targets`); rows where ``keep`` is false
    have ``label`` :data:`NO_LABEL` and NaN in ``vote_dist`` and ``target``."""

    keep: np.ndarray  # (N,) bool: the row is a face with an emotion plurality
    label: np.ndarray  # (N,) int64: EMOTIONS index (plurality, or the drawn one for probability)
    vote_dist: np.ndarray  # (N, 7) float32: the emotion votes, normalised to sum 1
    target: np.ndarray  # (N, 7) float32: the scheme's training target


def ferplus_targets(votes: np.ndarray, scheme: FerPlusScheme = "majority", *,
                    multilabel_threshold: float = 0.3, min_votes: int = 1,
                    contempt: ContemptPolicy = "drop", seed: int = 0) -> FerPlusTargets:
    """The four label schemes of Barsoum et al. 2016 (FER+) on ``votes`` (N, 10), columns
    :data:`FERPLUS_VOTES`, mapped onto :data:`~operators.schema.EMOTIONS`.

    1. Counts below ``min_votes`` are set to 0 (FER+'s reference code uses 2, dropping single
       votes as tagger noise; the default 1 keeps every vote).
    2. Contempt votes join disgust (``contempt="disgust"``) or count as non-emotion
       (``"drop"``), like ``unknown`` and ``NF`` (not a face).
    3. A row is kept only when its best emotion has strictly more votes than every
       non-emotion column: rows whose plurality is NF, unknown (or dropped contempt) are
       dropped, and a tie with them drops the row too, since the taggers could not agree it is
       a readable face of one of the 7 classes.
    4. ``vote_dist`` = the emotion votes normalised to sum 1; ``label`` = its argmax (ties go
       to the first class in EMOTIONS order), and then per ``scheme`` the ``target`` is

       * ``majority``: one-hot of the plurality label (MV);
       * ``multilabel``: 1 for every class with a share >= ``multilabel_threshold`` (and
         always the plurality class), else 0 — a target for a sigmoid/BCE loss (ML);
       * ``probability``: one-hot of a label drawn from ``vote_dist`` with
         ``numpy.random.default_rng(seed)`` (PLD); ``label`` is the drawn class.  PLD draws
         anew each epoch: call :func:`draw_labels` on ``vote_dist`` with the epoch's seed;
       * ``crossentropy``: ``vote_dist`` itself (CEL, a soft target).
    """
    if scheme not in FERPLUS_SCHEMES:
        raise ValueError(f"unknown FER+ scheme {scheme!r}; expected one of {FERPLUS_SCHEMES}")
    check_contempt(contempt)
    counts = np.asarray(votes, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != len(FERPLUS_VOTES):
        raise ValueError(f"votes must be (N, {len(FERPLUS_VOTES)}), got {counts.shape}")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError("FER+ vote counts must be finite and >= 0")
    counts = np.where(counts < min_votes, 0.0, counts)
    column = {name: counts[:, i] for i, name in enumerate(FERPLUS_VOTES)}
    emotion_votes = np.zeros((len(counts), N_CLASSES))
    for name, emotion in _FERPLUS_TO_EMOTIONS.items():
        emotion_votes[:, EMOTION_INDEX[emotion]] = column[name]
    other = [column["unknown"], column["NF"]]
    if contempt == "disgust":
        emotion_votes[:, EMOTION_INDEX["disgust"]] += column["contempt"]
    else:
        other.append(column["contempt"])
    keep = emotion_votes.max(axis=1) > np.max(other, axis=0)

    total = emotion_votes.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        vote_dist = np.where(keep[:, None], emotion_votes / total, np.nan)
    label = np.where(keep, np.argmax(np.nan_to_num(vote_dist), axis=1), NO_LABEL)
    one_hot = np.zeros_like(vote_dist)
    if scheme == "probability":
        label = np.full(len(counts), NO_LABEL)
        label[keep] = draw_labels(vote_dist[keep], seed)
    one_hot[keep, label[keep]] = 1.0
    if scheme == "multilabel":
        target = np.maximum((vote_dist >= multilabel_threshold).astype(np.float64), one_hot)
    elif scheme == "crossentropy":
        target = vote_dist
    else:
        target = one_hot
    target = np.where(keep[:, None], target, np.nan)
    return FerPlusTargets(keep, label.astype(np.int64), vote_dist.astype(np.float32),
                          target.astype(np.float32))


def draw_labels(dist: np.ndarray, seed: int | np.random.Generator) -> np.ndarray:
    """One class per row of ``dist`` (N, C), drawn with probability proportional to the row
    (rows need a positive sum; classes with weight 0 are never drawn).  Deterministic for a
    given integer ``seed``; returns int64 (N,)."""
    dist = np.asarray(dist, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(dist, axis=1)
    if (cdf[:, -1] <= 0).any() or (dist < 0).any():
        raise ValueError("every row of dist needs non-negative weights with a positive sum")
    cdf /= cdf[:, -1:]  # the last entry is exactly 1, so u in [0, 1) always lands in a class
    u = rng.random(len(dist))
    # class k is drawn when cdf[k-1] <= u < cdf[k], which needs weight k > 0
    return (cdf <= u[:, None]).sum(axis=1).astype(np.int64)


def read_ferplus(ferplus_uri: str, fer2013: str | pd.DataFrame, scheme: FerPlusScheme = "majority",
                 *, multilabel_threshold: float = 0.3, min_votes: int = 1,
                 contempt: ContemptPolicy = "drop", seed: int = 0,
                 storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """FER+ re-labels (``fer2013new.csv``) joined to FER2013's images, as a training table.

    ``fer2013new.csv`` (Microsoft's FERPlus repository) has the columns ``Usage, Image name``
    and the 10 vote columns :data:`FERPLUS_VOTES`, one row per FER2013 row in the same order.
    ``fer2013`` is the FER2013 CSV's URI or :func:`read_fer2013`'s table.  Rows are joined by
    order within each Usage (the k-th Training row of one file is the k-th Training row of the
    other), so a FER2013 copy without the PrivateTest rows (like shared/data's) still joins: FER+
    rows of a split the images lack are left out (logged).  Labels follow
    :func:`ferplus_targets` (which documents the four schemes and the NF/unknown/contempt
    rules); dropped rows are left out.  ``label_dist`` holds the scheme's target.

    Extra columns: ``vote_dist`` (7 float32, for per-epoch :func:`draw_labels`) and
    ``fer2013_label`` (FER2013's original label).  Raises ValueError when the FER+ columns
    differ from the published ones or a split's row counts disagree.
    """
    fs, path = open_fs(ferplus_uri, storage_options or {})
    with fs.open(path, "rb", compression="infer") as handle:
        votes_table = pd.read_csv(handle)
    if tuple(votes_table.columns) != _FERPLUS_COLUMNS:
        raise ValueError(f"{ferplus_uri}: expected FER+ columns {list(_FERPLUS_COLUMNS)}, got "
                         f"{list(votes_table.columns)}")
    images = fer2013 if isinstance(fer2013, pd.DataFrame) else read_fer2013(
        fer2013, storage_options)
    if images[SPLIT].isna().any():
        raise ValueError("FER+ joins FER2013 by order within Usage: the FER2013 rows need it")

    votes_split = votes_table["Usage"].map(FER_USAGE)
    if votes_split.isna().any():
        raise ValueError(f"{ferplus_uri}: unknown Usage values "
                         f"{sorted(set(votes_table['Usage'][votes_split.isna()]))}")
    parts = []
    for split in SPLITS:
        image_rows = images[images[SPLIT] == split]
        vote_rows = votes_table[votes_split == split]
        if image_rows.empty:
            if len(vote_rows):
                logger.info("FER+: no FER2013 images for split %s, leaving out its %d rows",
                            split, len(vote_rows))
            continue
        if len(image_rows) != len(vote_rows):
            raise ValueError(f"FER+ has {len(vote_rows)} rows for split {split}, FER2013 has "
                             f"{len(image_rows)}: not the same corpus order")
        joined = image_rows.reset_index(drop=True)
        joined[list(FERPLUS_VOTES)] = vote_rows[list(FERPLUS_VOTES)].to_numpy()
        parts.append(joined)
    if not parts:
        raise ValueError("FER+ and FER2013 share no split")
    joined = pd.concat(parts, ignore_index=True)

    targets = ferplus_targets(joined[list(FERPLUS_VOTES)].to_numpy(), scheme,
                              multilabel_threshold=multilabel_threshold, min_votes=min_votes,
                              contempt=contempt, seed=seed)
    logger.info("FER+ (%s): kept %d of %d rows (the rest: plurality not an emotion)", scheme,
                int(targets.keep.sum()), len(joined))
    joined = joined.drop(columns=list(FERPLUS_VOTES))
    joined["fer2013_label"] = joined[LABEL]
    joined[LABEL] = targets.label
    joined[LABEL_DIST] = pd.Series(list(targets.target), dtype=object)
    joined["vote_dist"] = pd.Series(list(targets.vote_dist), dtype=object)
    return joined[targets.keep].reset_index(drop=True)
