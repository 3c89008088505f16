"""RAVDESS (Livingstone & Russo 2018): 24 actors' speech and song, labelled by file name."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd

from models.voice_emotion.model import RAVDESS_EMOTIONS
from operators.io.files import StorageOptions
from operators.schema import URI
from pipelines.train.corpora.listing import AUDIO_EXTENSIONS, list_files
from pipelines.train.table import (
    EMOTION_INDEX,
    LABEL,
    SPLIT,
    SUBJECT,
    TEST,
    TRAIN,
    VAL,
    table_from_records,
)

logger = logging.getLogger(__name__)

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
    for uri, rel in list_files(root, storage_options):
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
            URI: uri, LABEL: EMOTION_INDEX[RAVDESS_EMOTIONS[emotion]],
            SUBJECT: ravdess_subject(int(actor)), "modality": RAVDESS_MODALITIES[modality],
            "vocal_channel": RAVDESS_CHANNELS[channel],
            "intensity": RAVDESS_INTENSITIES[intensity], "statement": int(statement),
            "repetition": int(repetition), "actor": int(actor), "emotion_code": emotion})
    if ignored:
        logger.info("RAVDESS: ignored %d file(s) under %s that are not named MM-VV-EE-II-SS-RR-AA"
                    " media", ignored, root)
    return table_from_records(records, ("modality", "vocal_channel", "intensity", "statement",
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
