"""CREMA-D (Cao et al. 2014): 91 actors' sentences, labelled by file name."""

from __future__ import annotations

import logging
import re
from typing import Any

import pandas as pd

from operators.io.files import StorageOptions
from operators.schema import URI
from pipelines.train.corpora.listing import AUDIO_EXTENSIONS, list_files
from pipelines.train.table import (
    EMOTION_INDEX,
    LABEL,
    SUBJECT,
    table_from_records,
)

logger = logging.getLogger(__name__)

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
    ``subject`` = ``cremad:<actor>``; no split is defined (use
    :func:`~pipelines.train.splits.split_by_subject`).  Other files are ignored (counted in the
    log); a name of that shape with an undefined code raises ValueError.

    Extra columns: ``actor`` (int), ``sentence`` (code), ``intensity`` (low/medium/high/
    unspecified).
    """
    records: list[dict[str, Any]] = []
    ignored = 0
    for uri, rel in list_files(root, storage_options):
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
        records.append({URI: uri, LABEL: EMOTION_INDEX[CREMAD_EMOTIONS[emotion]],
                        SUBJECT: f"cremad:{actor}", "actor": int(actor), "sentence": sentence,
                        "intensity": CREMAD_LEVELS[level]})
    if ignored:
        logger.info("CREMA-D: ignored %d file(s) under %s that are not named "
                    "Actor_Sentence_Emotion_Level media", ignored, root)
    return table_from_records(records, ("actor", "sentence", "intensity"))
