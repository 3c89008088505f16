"""Emotion corpora as training tables, subject-disjoint splits, re-weighting and augmentation.

Every adapter reads a corpus in its exact published layout, from a local path or any fsspec
URL (``s3://…`` with ``storage_options`` keyed by protocol, as made by ``infra.storage``), and
returns a pandas DataFrame with the columns :data:`COLUMNS`, one row per labelled sample:

* ``uri``: the media file (local absolute path, or ``protocol://…``); missing for FER2013,
  whose images are inline in ``pixels`` (decode with :func:`fer_pixels_to_image`);
* ``label``: index into :data:`operators.schema.EMOTIONS`, :data:`NO_LABEL` (-1) when absent;
* ``label_dist``: 7 float32 target weights over EMOTIONS (FER+ schemes, manifests), else None;
* ``valence``, ``arousal``: floats in [-1, 1], NaN when the corpus has none;
* ``subject``: who is recorded, ``"<corpus>:<id>"`` (e.g. ``ravdess:17``), missing when
  unknown; splits are made on this column, never on clips (:func:`split_by_subject`);
* ``split``: ``train``/``val``/``test`` where the corpus defines one, else missing;
* ``start_s``, ``end_s``: the window inside the file in seconds; NaN = the whole file.

Adapters append corpus-specific columns after these (documented on each).  Rows come in a
deterministic order (file order, or sorted URIs for folder listings).  Malformed corpora raise
``ValueError`` naming the file and the offending value; a missing root raises
``FileNotFoundError``.  Nothing here decodes media up front: :func:`load_audio`,
:func:`load_image` and :func:`fer_pixels_to_image` decode one sample when the loader needs it.

Label mapping onto the 7 FER2013 classes:

* RAVDESS: :data:`models.voice_emotion.model.RAVDESS_EMOTIONS` (calm → neutral).
* CREMA-D: ANG, DIS, FEA, HAP, NEU, SAD → angry, disgust, fear, happy, neutral, sad.
* Class names (AffectNet-style folders, manifests): case-insensitive, with the synonyms in
  :data:`EMOTION_ALIASES` (anger, happiness, surprised, …; calm → neutral as for RAVDESS).
  Contempt is not one of the 7 classes: ``contempt="drop"`` (default) leaves its samples out,
  ``contempt="disgust"`` merges it into disgust (the nearest class: both are rejection
  expressions, and FER2013 itself was labelled without a contempt class).
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import fsspec
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from models.voice_emotion.model import RAVDESS_EMOTIONS
from operators.audio.extract_audio import SAMPLE_RATE, AudioStream
from operators.io.files import StorageOptions, download, is_remote, open_fs
from operators.schema import AROUSAL, EMOTIONS, URI, VALENCE

logger = logging.getLogger(__name__)

# --- the common schema ----------------------------------------------------------------------
PIXELS = "pixels"
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
_INDEX = {name: i for i, name in enumerate(EMOTIONS)}

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

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".mp4", ".flv")
"""Extensions the speech-corpus listings keep (RAVDESS ships .wav/.mp4, CREMA-D .wav/.mp3/.flv)."""
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _frame(n: int, columns: Mapping[str, Any], extra: Mapping[str, Any] | None = None
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


def _from_records(records: list[dict[str, Any]], extra: tuple[str, ...]) -> pd.DataFrame:
    """A table from per-file records holding ``uri``, ``label``, ``subject`` and ``extra``."""
    table = pd.DataFrame.from_records(records, columns=[URI, LABEL, SUBJECT, *extra])
    return _frame(len(table), {URI: table[URI].tolist(),
                               LABEL: table[LABEL].to_numpy(dtype=np.int64),
                               SUBJECT: table[SUBJECT].tolist()},
                  {name: table[name].to_numpy() for name in extra})


def _options(storage_options: StorageOptions | None) -> StorageOptions:
    return storage_options or {}


def _uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """How a listed file is named in the table: a plain path locally, else ``protocol://path``."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return path
    return f"{protocol}://{path}"


def _list_files(root: str, storage_options: StorageOptions | None
                ) -> list[tuple[str, PurePosixPath]]:
    """Every file under ``root`` (recursive) as (uri, path relative to root), sorted by uri."""
    fs, path = open_fs(root, _options(storage_options))
    path = path.rstrip("/")
    if _uri(fs, path) == path:  # local: name files without "..", as the OS resolves them
        path = os.path.normpath(path)
    if not fs.isdir(path):
        raise FileNotFoundError(f"corpus folder {root!r} does not exist or is not a folder")
    files = []
    for name in sorted(fs.find(path)):
        files.append((_uri(fs, name), PurePosixPath(name).relative_to(path)))
    return files


def _emotion_index(name: str, contempt: ContemptPolicy = "drop") -> int | None:
    """EMOTIONS index of a class name (aliases, any case); None for dropped contempt.

    Raises KeyError for a name that is neither an emotion, an alias nor contempt."""
    key = name.strip().lower()
    if key == "contempt":
        return _INDEX["disgust"] if contempt == "disgust" else None
    return _INDEX[EMOTION_ALIASES[key]]


def _check_contempt(contempt: str) -> None:
    if contempt not in ("drop", "disgust"):
        raise ValueError(f"contempt must be 'drop' or 'disgust', got {contempt!r}")


# --- FER2013 --------------------------------------------------------------------------------
FER_SIZE = 48
FER_USAGE: dict[str, str] = {"Training": TRAIN, "PublicTest": VAL, "PrivateTest": TEST}
"""FER2013 ``Usage`` → split: the challenge's public test set is the validation set."""


def read_fer2013(uri: str, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """FER2013's CSV (``emotion,pixels,Usage``; ``.gz`` or plain) as a training table.

    ``emotion`` 0–6 is already the :data:`EMOTIONS` index; ``Usage`` Training/PublicTest/
    PrivateTest becomes split train/val/test (:data:`FER_USAGE`).  Files without ``emotion``
    (the challenge's unlabelled test file) give :data:`NO_LABEL`, without ``Usage`` a missing
    split.  ``pixels`` keeps the corpus's text cells (2,304 space-separated grey values):
    decoding them with :func:`fer_pixels_to_image` is the data loader's job, where it runs per
    batch in parallel workers.  ``uri`` and ``subject`` are missing (FER2013 names no people).
    Raises ValueError on a missing ``pixels`` column, an emotion outside 0–6 or an unknown
    Usage.
    """
    fs, path = open_fs(uri, _options(storage_options))
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
    frame = _frame(n, columns, {PIXELS: raw[PIXELS].astype(str).to_numpy(dtype=object)})
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


# --- FER+ -----------------------------------------------------------------------------------
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
    :data:`FERPLUS_VOTES`, mapped onto :data:`EMOTIONS`.

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
    _check_contempt(contempt)
    counts = np.asarray(votes, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != len(FERPLUS_VOTES):
        raise ValueError(f"votes must be (N, {len(FERPLUS_VOTES)}), got {counts.shape}")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError("FER+ vote counts must be finite and >= 0")
    counts = np.where(counts < min_votes, 0.0, counts)
    column = {name: counts[:, i] for i, name in enumerate(FERPLUS_VOTES)}
    emotion_votes = np.zeros((len(counts), N_CLASSES))
    for name, emotion in _FERPLUS_TO_EMOTIONS.items():
        emotion_votes[:, _INDEX[emotion]] = column[name]
    other = [column["unknown"], column["NF"]]
    if contempt == "disgust":
        emotion_votes[:, _INDEX["disgust"]] += column["contempt"]
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
    fs, path = open_fs(ferplus_uri, _options(storage_options))
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


# --- RAVDESS --------------------------------------------------------------------------------
_RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
RAVDESS_MODALITIES = {"01": "audio-video", "02": "video", "03": "audio"}
RAVDESS_CHANNELS = {"01": "speech", "02": "song"}
RAVDESS_INTENSITIES = {"01": "normal", "02": "strong"}
RAVDESS_VAL_ACTORS: tuple[int, ...] = (17, 18, 19, 20)
RAVDESS_TEST_ACTORS: tuple[int, ...] = (21, 22, 23, 24)


def ravdess_subject(actor: int) -> str:
    """The ``subject`` id of a RAVDESS actor (1–24)."""
    return f"ravdess:{actor:02d}"


def read_ravdess(root: str, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """Every RAVDESS file under ``root`` (any folder layout, e.g. ``Actor_01/…``).

    Names follow ``MM-VV-EE-II-SS-RR-AA.ext``: modality (01 audio-video, 02 video-only,
    03 audio-only), vocal channel (01 speech, 02 song), emotion (01–08, mapped by
    :data:`RAVDESS_EMOTIONS`: calm → neutral), intensity (01 normal, 02 strong), statement
    (01 "Kids are talking by the door", 02 "Dogs are sitting by the door"), repetition, actor
    (01–24, odd = male).  ``subject`` = :func:`ravdess_subject` (actor); RAVDESS defines no
    split (use :func:`ravdess_split`).  Files without a media extension (:data:`AUDIO_EXTENSIONS`)
    or a 7-field name are ignored (counted in the log); a 7-field name with an undefined code
    raises ValueError.  Video-only files have no audio: filter on ``modality`` for voice work.

    Extra columns: ``modality``, ``vocal_channel``, ``intensity`` (names above), ``statement``,
    ``repetition``, ``actor`` (ints), ``emotion_code`` (RAVDESS's own, "01"–"08").
    """
    records: list[dict[str, Any]] = []
    ignored = 0
    for uri, rel in _list_files(root, storage_options):
        match = _RAVDESS_NAME.match(rel.stem)
        if rel.suffix.lower() not in AUDIO_EXTENSIONS or match is None:
            ignored += 1
            continue
        modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
        checks = ((modality, RAVDESS_MODALITIES, "modality"), (channel, RAVDESS_CHANNELS,
                  "vocal channel"), (emotion, RAVDESS_EMOTIONS, "emotion"),
                  (intensity, RAVDESS_INTENSITIES, "intensity"),
                  (statement, ("01", "02"), "statement"), (repetition, ("01", "02"),
                  "repetition"))
        for code, allowed, field in checks:
            if code not in allowed:
                raise ValueError(f"{uri}: RAVDESS {field} code {code} is not one of "
                                 f"{sorted(allowed)}")
        if not 1 <= int(actor) <= 24:
            raise ValueError(f"{uri}: RAVDESS actor {actor} is not in 01–24")
        records.append({
            URI: uri, LABEL: _INDEX[RAVDESS_EMOTIONS[emotion]],
            SUBJECT: ravdess_subject(int(actor)), "modality": RAVDESS_MODALITIES[modality],
            "vocal_channel": RAVDESS_CHANNELS[channel],
            "intensity": RAVDESS_INTENSITIES[intensity], "statement": int(statement),
            "repetition": int(repetition), "actor": int(actor), "emotion_code": emotion})
    if ignored:
        logger.info("RAVDESS: ignored %d file(s) under %s that are not named MM-VV-EE-II-SS-RR-AA"
                    " media", ignored, root)
    return _from_records(records, ("modality", "vocal_channel", "intensity", "statement",
                                   "repetition", "actor", "emotion_code"))


def ravdess_split(frame: pd.DataFrame) -> pd.DataFrame:
    """RAVDESS's fixed speaker-independent split, written down once so runs compare.

    Validation actors 17–20 (:data:`RAVDESS_VAL_ACTORS`: two male, two female), test actors
    21–24 (:data:`RAVDESS_TEST_ACTORS`, held out of shared/data as the external test set),
    training actors 1–16.  Returns a copy with ``split`` set; raises ValueError for rows whose
    subject is not a RAVDESS actor.
    """
    subjects = frame[SUBJECT]
    known = {ravdess_subject(actor) for actor in range(1, 25)}
    if not subjects.isin(known).all():
        raise ValueError("ravdess_split needs RAVDESS rows (subject 'ravdess:NN'), got "
                         f"{sorted(set(subjects[~subjects.isin(known)].astype(str)))[:5]}")
    split = np.full(len(frame), TRAIN, dtype=object)
    split[subjects.isin({ravdess_subject(a) for a in RAVDESS_VAL_ACTORS}).to_numpy()] = VAL
    split[subjects.isin({ravdess_subject(a) for a in RAVDESS_TEST_ACTORS}).to_numpy()] = TEST
    out = frame.copy()
    out[SPLIT] = split
    return out


# --- CREMA-D --------------------------------------------------------------------------------
_CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
CREMAD_EMOTIONS: dict[str, str] = {"ANG": "angry", "DIS": "disgust", "FEA": "fear",
                                   "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMAD_SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting", "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before",
    "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}
CREMAD_LEVELS: dict[str, str] = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}


def read_cremad(root: str, storage_options: StorageOptions | None = None) -> pd.DataFrame:
    """Every CREMA-D file under ``root`` (``AudioWAV/``, ``AudioMP3/``, ``VideoFlash/`` …).

    Names follow ``ActorID_Sentence_Emotion_Level.ext``: actor 1001–1091, one of the 12
    sentence codes (:data:`CREMAD_SENTENCES`), emotion ANG/DIS/FEA/HAP/NEU/SAD
    (:data:`CREMAD_EMOTIONS`; CREMA-D has no surprise), level LO/MD/HI or XX (unspecified).
    ``subject`` = ``cremad:<actor>``; no split is defined (use :func:`split_by_subject`).  Other
    files are ignored (counted in the log); a name of that shape with an undefined code raises
    ValueError.

    Extra columns: ``actor`` (int), ``sentence`` (code), ``intensity`` (low/medium/high/
    unspecified).
    """
    records: list[dict[str, Any]] = []
    ignored = 0
    for uri, rel in _list_files(root, storage_options):
        match = _CREMAD_NAME.match(rel.stem)
        if rel.suffix.lower() not in AUDIO_EXTENSIONS or match is None:
            ignored += 1
            continue
        actor, sentence, emotion, level = match.groups()
        for code, allowed, field in ((sentence, CREMAD_SENTENCES, "sentence"),
                                     (emotion, CREMAD_EMOTIONS, "emotion"),
                                     (level, CREMAD_LEVELS, "level")):
            if code not in allowed:
                raise ValueError(f"{uri}: CREMA-D {field} code {code} is not one of "
                                 f"{sorted(allowed)}")
        if not 1001 <= int(actor) <= 1091:
            raise ValueError(f"{uri}: CREMA-D actor {actor} is not in 1001–1091")
        records.append({URI: uri, LABEL: _INDEX[CREMAD_EMOTIONS[emotion]],
                        SUBJECT: f"cremad:{actor}", "actor": int(actor), "sentence": sentence,
                        "intensity": CREMAD_LEVELS[level]})
    if ignored:
        logger.info("CREMA-D: ignored %d file(s) under %s that are not named "
                    "Actor_Sentence_Emotion_Level media", ignored, root)
    return _from_records(records, ("actor", "sentence", "intensity"))


# --- AffectNet-style folder trees -----------------------------------------------------------
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
    _check_contempt(contempt)
    files = [(uri, rel) for uri, rel in _list_files(root, storage_options)
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
            index = _emotion_index(folder, contempt)
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
    return _frame(len(uris), {URI: uris, LABEL: np.array(labels, dtype=np.int64),
                              SPLIT: splits}, {"class_folder": folders})


# --- generic manifests ----------------------------------------------------------------------
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
            out[row] = _INDEX[EMOTION_ALIASES[text.lower()]]
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
    fs, path = open_fs(uri, _options(storage_options))
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

    base = _uri(fs, str(PurePosixPath(path).parent))
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
    frame = _frame(len(raw), columns)
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


# --- splits, weights, re-sampling -----------------------------------------------------------
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


def class_weights(labels: Iterable[Any] | np.ndarray | torch.Tensor,
                  n_classes: int = N_CLASSES) -> torch.Tensor:
    """Per-class loss weights from reciprocal frequency: ``w_c = N / (K · n_c)``.

    N = labelled samples, K = classes that occur, n_c = samples of class c, so the weights
    average to 1 over the samples (the loss keeps its scale) and every class present weighs
    the same in total.  Classes that never occur get 0 (there is nothing to weigh; logged).
    Absent labels (negative or NaN) are ignored.  Returns float32 (n_classes,).  Raises
    ValueError for a label >= n_classes or no labelled sample at all.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    values = np.asarray(labels, dtype=np.float64)
    values = values[~np.isnan(values) & (values >= 0)].astype(np.int64)
    if values.size == 0:
        raise ValueError("class weights need at least one labelled sample")
    if values.max() >= n_classes:
        raise ValueError(f"label {int(values.max())} is not below n_classes={n_classes}")
    counts = np.bincount(values, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = values.size / (present.sum() * counts[present])
    if not present.all():
        logger.info("class weights: classes %s have no samples, weight 0",
                    np.flatnonzero(~present).tolist())
    return torch.tensor(weights, dtype=torch.float32)


def oversample_rare(frame: pd.DataFrame, target_ratio: float = 0.5, max_factor: float = 5.0,
                    seed: int = 0) -> pd.DataFrame:
    """Re-sample rare classes' rows (clips or windows) so that each labelled class has at least
    ``target_ratio`` × the largest class's count, growing no class beyond ``max_factor`` × its
    own count (so 500 disgust faces do not become 10,000 copies of the same 500).

    Repeats are spread evenly: a class first gets whole copies of all its rows, then a sample
    without replacement (``seed``) for the remainder, so the repeat counts of a class's rows
    differ by at most one.  Rows without a label are kept once.  Returns the original rows
    followed by the repeats, with a fresh index.  Apply it to training rows only: repeating
    validation rows would bias its metrics; pair it with augmentation so repeats are not
    identical inputs.
    """
    if not 0 < target_ratio <= 1 or max_factor < 1:
        raise ValueError("need 0 < target_ratio <= 1 and max_factor >= 1")
    labels = frame[LABEL].to_numpy()
    counts = np.bincount(labels[labels >= 0], minlength=N_CLASSES)
    if counts.sum() == 0:
        return frame.reset_index(drop=True)
    goal = math.ceil(target_ratio * counts.max())
    rng = np.random.default_rng(seed)
    extra_rows = []
    added = {}
    for cls in np.flatnonzero(counts):
        n = int(counts[cls])
        extra = min(goal, math.floor(max_factor * n)) - n
        if extra <= 0:
            continue
        rows = np.flatnonzero(labels == cls)
        repeats = np.concatenate([np.tile(rows, extra // n),
                                  rng.choice(rows, extra % n, replace=False)])
        extra_rows.append(np.sort(repeats))
        added[EMOTIONS[cls]] = extra
    if not extra_rows:
        return frame.reset_index(drop=True)
    logger.info("oversampled rare classes (rows added): %s", added)
    index = np.concatenate([np.arange(len(frame)), *extra_rows])
    return frame.iloc[index].reset_index(drop=True)


# --- decoding -------------------------------------------------------------------------------
def load_audio(uri: str, start_s: float = math.nan, end_s: float = math.nan,
               storage_options: StorageOptions | None = None) -> np.ndarray:
    """A file's first audio stream (or the window ``[start_s, end_s)``) as 16 kHz mono float32.

    NaN bounds mean the file's start/end; a window running past the end comes back short.
    Decoded by ffmpeg (any container: FLAC, WAV, MP4 …);
    remote objects are first copied to a temporary local file (decoders need to seek).  Raises
    ``operators.audio.extract_audio.AudioDecodeError`` when ffmpeg cannot decode it.
    """
    start = 0.0 if math.isnan(start_s) else float(start_s)
    n_samples = None if math.isnan(end_s) else round((end_s - start) * SAMPLE_RATE)
    if n_samples is not None and n_samples <= 0:
        raise ValueError(f"empty window [{start_s}, {end_s})")
    if not is_remote(uri):
        return _read_stream(uri, start, n_samples)
    with tempfile.TemporaryDirectory(prefix="emoray-audio-") as tmp:
        local = Path(tmp) / PurePosixPath(uri).name
        download(uri, _options(storage_options), local)
        return _read_stream(str(local), start, n_samples)


def _read_stream(path: str, start_s: float, n_samples: int | None) -> np.ndarray:
    with AudioStream(path, start_s=start_s) as stream:
        if n_samples is not None:
            return stream.read(n_samples)
        parts = []
        while (part := stream.read(SAMPLE_RATE * 10)).size:
            parts.append(part)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def load_image(uri: str, grey: bool = False, storage_options: StorageOptions | None = None
               ) -> np.ndarray:
    """An image file as ``uint8`` (H, W, 3) RGB, or (H, W) with ``grey=True`` (Pillow's ITU-R
    601-2 luma).  Raises ``PIL.UnidentifiedImageError`` for a file that is not an
    image."""
    fs, path = open_fs(uri, _options(storage_options))
    with fs.open(path, "rb") as handle, Image.open(handle) as image:
        return np.asarray(image.convert("L" if grey else "RGB"))


# --- augmentation: face crops ---------------------------------------------------------------
def _image_batch(images: torch.Tensor) -> torch.Tensor:
    """``images`` (H, W), (C, H, W) or (N, C, H, W) floats as (N, C, H, W)."""
    if not torch.is_floating_point(images):
        raise TypeError(f"augmentations take float images in [0, 1], got {images.dtype}")
    if not 2 <= images.dim() <= 4:
        raise ValueError(f"images must be (H, W), (C, H, W) or (N, C, H, W), got "
                         f"{tuple(images.shape)}")
    return images.reshape((1,) * (4 - images.dim()) + tuple(images.shape))


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None,
             like: torch.Tensor) -> torch.Tensor:
    # Drawn on the CPU generator and then moved, so a seed gives the same draws on any device.
    draws = torch.rand(n, generator=generator, dtype=torch.float64)
    return (low + (high - low) * draws).to(device=like.device, dtype=like.dtype)


def _rotation(n: int, max_degrees: float, generator: torch.Generator | None,
              like: torch.Tensor) -> torch.Tensor:
    angle = _uniform(n, -max_degrees, max_degrees, generator, like) * (math.pi / 180)
    cos, sin, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1),
                        torch.stack([zero, zero, one], 1)], 1)


def _crop(n: int, scale: tuple[float, float], generator: torch.Generator | None,
          like: torch.Tensor) -> torch.Tensor:
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
    side = _uniform(n, scale[0], scale[1], generator, like).sqrt()
    shift_x = _uniform(n, -1, 1, generator, like) * (1 - side)
    shift_y = _uniform(n, -1, 1, generator, like) * (1 - side)
    zero, one = torch.zeros_like(side), torch.ones_like(side)
    return torch.stack([torch.stack([side, zero, shift_x], 1),
                        torch.stack([zero, side, shift_y], 1),
                        torch.stack([zero, zero, one], 1)], 1)


def _warp(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample (N, C, H, W) ``images``: output pixel p reads input at ``matrix @ p``
    (normalised coordinates, (N, 3, 3)).  Edge pixels extend outward, so no black corners."""
    grid = F.affine_grid(matrix[:, :2], list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def hflip(images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
          ) -> torch.Tensor:
    """Mirror each image left–right with probability ``p`` (faces are near-symmetric, the
    expression is the same).  Shapes (H, W), (C, H, W) or (N, C, H, W), floats; same shape out.
    Every augmentation here draws its randomness from ``generator`` (CPU; the global RNG when
    None), per image in a batch, so a seeded generator repeats the same output."""
    batch = _image_batch(images)
    flip = _uniform(len(batch), 0, 1, generator, batch) < p
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch).reshape(images.shape)


def rotate(images: torch.Tensor, max_degrees: float = 10.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image by a uniform angle in ±``max_degrees`` about its centre (head roll);
    meant for square crops.  Shapes as :func:`hflip`."""
    batch = _image_batch(images)
    return _warp(batch, _rotation(len(batch), max_degrees, generator, batch)
                 ).reshape(images.shape)


def crop_resize(images: torch.Tensor, scale: tuple[float, float] = (0.8, 1.0),
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop a random square covering ``scale`` (area share) of each image and resize it back
    to the full size (detector box jitter).  Shapes as :func:`hflip`."""
    batch = _image_batch(images)
    return _warp(batch, _crop(len(batch), scale, generator, batch)).reshape(images.shape)


def brightness(images: torch.Tensor, max_delta: float = 0.2,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each image's intensities by a factor in 1 ± ``max_delta`` (lighting), clipped to
    [0, 1].  Shapes as :func:`hflip`."""
    batch = _image_batch(images)
    factor = _uniform(len(batch), 1 - max_delta, 1 + max_delta, generator, batch)
    return (batch * factor[:, None, None, None]).clamp(0, 1).reshape(images.shape)


def gaussian_noise(images: torch.Tensor, std: float = 0.02,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``std`` (sensor noise, webcam compression),
    clipped to [0, 1].  Any float shape."""
    if not torch.is_floating_point(images):
        raise TypeError(f"augmentations take float images in [0, 1], got {images.dtype}")
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float64)
    return (images + std * noise.to(images.device, images.dtype)).clamp(0, 1)


def augment_face(images: torch.Tensor, generator: torch.Generator | None = None, *,
                 p_flip: float = 0.5, max_degrees: float = 10.0,
                 crop_scale: tuple[float, float] = (0.8, 1.0), max_brightness: float = 0.2,
                 noise_std: float = 0.02) -> torch.Tensor:
    """Training augmentation of face crops in [0, 1]: flip, rotation and crop-resize (composed
    into one resampling, so the image is interpolated once), brightness, Gaussian noise.
    Shapes as :func:`hflip`; the output is in [0, 1] with the input's shape and dtype."""
    batch = _image_batch(images)
    batch = hflip(batch, p_flip, generator)
    # out(p) = rotated(crop(p)) = x(R · C · p): one grid_sample instead of two blurs
    matrix = _rotation(len(batch), max_degrees, generator, batch) @ _crop(
        len(batch), crop_scale, generator, batch)
    batch = brightness(_warp(batch, matrix), max_brightness, generator)
    return gaussian_noise(batch, noise_std, generator).reshape(images.shape)


# --- augmentation: audio --------------------------------------------------------------------
def _rows(audio: torch.Tensor) -> torch.Tensor:
    """``audio`` (..., T) floats as (rows, T)."""
    if not torch.is_floating_point(audio):
        raise TypeError(f"audio augmentations take float samples, got {audio.dtype}")
    if audio.dim() == 0:
        raise ValueError("audio needs a time axis")
    return audio.reshape(-1, audio.shape[-1])


def random_gain(audio: torch.Tensor, min_db: float = -6.0, max_db: float = 6.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each row of ``audio`` (..., T) by a gain drawn uniformly in [min_db, max_db] dB
    (microphone level).  Not clipped: the features take float samples.  Randomness as
    :func:`hflip`, per row."""
    rows = _rows(audio)
    gain_db = _uniform(len(rows), min_db, max_db, generator, rows)
    return (rows * 10 ** (gain_db[:, None] / 20)).reshape(audio.shape)


def add_noise(audio: torch.Tensor, snr_db: float | tuple[float, float] = (10.0, 30.0),
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise at a signal-to-noise ratio of ``snr_db`` (a value, or a range
    drawn uniformly per row) relative to each row's mean power (room noise, cheap
    microphones).  A silent row stays silent (its SNR is undefined).  Shape (..., T)."""
    rows = _rows(audio)
    low, high = (snr_db, snr_db) if isinstance(snr_db, (int, float)) else snr_db
    snr = _uniform(len(rows), low, high, generator, rows)
    signal_power = rows.pow(2).mean(dim=1)
    noise_std = (signal_power / 10 ** (snr / 10)).sqrt()
    noise = torch.randn(rows.shape, generator=generator, dtype=torch.float64)
    return (rows + noise_std[:, None] * noise.to(rows.device, rows.dtype)).reshape(audio.shape)


def time_mask(audio: torch.Tensor, max_fraction: float = 0.1, n_masks: int = 1,
              value: float = 0.0, feature_dims: int = 0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Set ``n_masks`` random spans along the last (time) axis to ``value``, each up to
    ``max_fraction`` of its length (dropouts; SpecAugment's time masking).

    The last ``feature_dims + 1`` axes form one item whose feature rows share the spans:
    ``feature_dims=0`` for waveforms (..., T), ``1`` for spectrograms (..., F, T) (then pass
    the spectrogram's floor as ``value``).  Spans are drawn per item; same shape out."""
    if not torch.is_floating_point(audio):
        raise TypeError(f"audio augmentations take float samples, got {audio.dtype}")
    if audio.dim() < feature_dims + 1:
        raise ValueError(f"a tensor of shape {tuple(audio.shape)} has no time axis after "
                         f"{feature_dims} feature axes")
    length = audio.shape[-1]
    items = audio.reshape(-1, math.prod(audio.shape[audio.dim() - feature_dims - 1:-1]), length)
    n = len(items)
    widths = (_uniform(n * n_masks, 0, max_fraction * length, generator, items)
              .floor().long().reshape(n, n_masks))
    starts = (_uniform(n * n_masks, 0, 1, generator, items).reshape(n, n_masks)
              * (length - widths + 1)).floor().long()
    position = torch.arange(length, device=audio.device)[None, None, :]
    hit = ((position >= starts[..., None]) & (position < (starts + widths)[..., None])).any(1)
    return items.masked_fill(hit[:, None, :], value).reshape(audio.shape)


def augment_voice(audio: torch.Tensor, generator: torch.Generator | None = None, *,
                  min_db: float = -6.0, max_db: float = 6.0,
                  snr_db: float | tuple[float, float] = (10.0, 30.0),
                  max_mask_fraction: float = 0.1, n_masks: int = 1) -> torch.Tensor:
    """Training augmentation of waveforms (..., T): gain, noise at an SNR, time masking, in
    that order (masking last, so a masked span is a true dropout: silence, not noise)."""
    audio = random_gain(audio, min_db, max_db, generator)
    audio = add_noise(audio, snr_db, generator)
    return time_mask(audio, max_mask_fraction, n_masks, generator=generator)


def spec_augment(spec: torch.Tensor, generator: torch.Generator | None = None, *,
                 time_masks: int = 2, freq_masks: int = 2, max_fraction: float = 0.15,
                 value: float = 0.0) -> torch.Tensor:
    """SpecAugment (Park et al., Interspeech 2019) without time warping: ``time_masks`` spans
    of frames and ``freq_masks`` bands of mel bins of spectrograms (..., F, T) set to
    ``value``, each span up to ``max_fraction`` of its axis, drawn per spectrogram.

    The voice front end standardises each window, so its mean is 0: the default ``value``
    masks with the mean (no step the network could key on).  Same shape out."""
    if time_masks:
        spec = time_mask(spec, max_fraction, time_masks, value, feature_dims=1,
                         generator=generator)
    if freq_masks:
        # Bands along the mel axis = time masks of the transposed spectrograms.
        spec = time_mask(spec.transpose(-1, -2), max_fraction, freq_masks, value,
                         feature_dims=1, generator=generator).transpose(-1, -2)
    return spec


# --- utterances: speech trimming, training crops, evaluation windows ---------------------------
TRIM_FRAME = 400  # 25 ms at 16 kHz: the frames whose loudness decides where speech is
TRIM_HOP = 160  # 10 ms


def speech_bounds(audio: np.ndarray, top_db: float = 35.0) -> tuple[int, int]:
    """``[start, end)`` samples of the speech in ``audio``: from the first to the last 25 ms
    frame (every 10 ms) whose power is within ``top_db`` of the loudest frame's.  Silence
    before and after an utterance carries no emotion, but the clip's label would be trained
    on it.  Digital silence (or a recording shorter than a frame) keeps the whole of it."""
    audio = np.asarray(audio, dtype=np.float64)
    if len(audio) < TRIM_FRAME:
        return 0, len(audio)
    starts = np.arange(0, len(audio) - TRIM_FRAME + 1, TRIM_HOP)
    frames = np.lib.stride_tricks.sliding_window_view(audio, TRIM_FRAME)[starts]
    power = np.mean(np.square(frames), axis=1)
    if power.max() <= 0:
        return 0, len(audio)
    loud = np.flatnonzero(power >= power.max() * 10 ** (-top_db / 10))
    return int(starts[loud[0]]), int(starts[loud[-1]] + TRIM_FRAME)


def random_crops(audio: torch.Tensor, lengths: torch.Tensor, size: int, per_row: int = 1,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_row`` random windows of ``size`` samples from each row of ``audio`` (B, T), whose
    first ``lengths[b]`` samples are the signal (the rest is padding): a start drawn uniformly
    so that the window lies inside the signal; a row shorter than ``size`` is placed whole at a
    random offset in a silent window instead.  Returns ``(windows (B * per_row, size), row
    (B * per_row,))`` — each window's source row, crops of one row adjacent.  Fresh draws every
    call (every epoch), reproducible from ``generator``."""
    if audio.dim() != 2 or lengths.shape != (audio.shape[0],):
        raise ValueError(f"random_crops takes audio (B, T) and lengths (B,), got "
                         f"{tuple(audio.shape)} and {tuple(lengths.shape)}")
    if per_row < 1 or size < 1:
        raise ValueError(f"per_row and size must be positive, got {per_row}, {size}")
    lengths = lengths.cpu().long().clamp(max=audio.shape[1])
    row = torch.arange(len(audio)).repeat_interleave(per_row)
    length = lengths[row]
    slack = (length - size).abs()  # room to move the crop (long) or the signal (short)
    shift = (torch.rand(len(row), generator=generator, dtype=torch.float64)
             * (slack + 1)).floor().long()
    position = torch.arange(size)[None, :]
    long = (length >= size)[:, None]
    # long rows: window = signal[shift : shift + size]; short: signal starts at `shift`
    source = torch.where(long, position + shift[:, None], position - shift[:, None])
    valid = (source >= 0) & (source < length[:, None])
    gathered = audio.cpu()[row[:, None], source.clamp(0, audio.shape[1] - 1)]
    windows = torch.where(valid, gathered, torch.zeros((), dtype=audio.dtype))
    return windows.to(audio.device), row.to(audio.device)


def utterance_windows(length: int, size: int, hop: int) -> list[int]:
    """Start samples of the evaluation windows of an utterance of ``length`` samples: every
    ``hop`` while a whole window fits; one window at 0 (padded) when it is shorter."""
    if length <= size:
        return [0]
    return list(range(0, length - size + 1, hop))
