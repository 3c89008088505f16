"""Per-task summaries of the participant's track (``schema.SEGMENT_SCHEMA``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from operators import schema as S
from operators.findings.baseline import confident, window_mid
from operators.findings.context import Marker
from operators.findings.moments import Moment


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.mean()) if len(values) else None


def summarise(track: pd.DataFrame, span: tuple[float, float], task: str | None,
              moments: list[Moment]) -> dict:
    """One ``SEGMENT_SCHEMA`` row (without the clip's identity and metadata) of the windows
    of ``track`` whose middle lies in ``span``, and of the moments whose peak does."""
    mid = window_mid(track)
    rows = track[(mid >= span[0]) & (mid < span[1])]
    sure = rows[confident(rows)]
    row = {S.TASK: task, S.START_S: span[0], S.END_S: span[1],
           S.DURATION: span[1] - span[0], S.WINDOWS: len(rows),
           S.CONFIDENT_WINDOWS: len(sure),
           S.FACE_COVERAGE: float(rows[S.FACE_PRESENT].mean()) if len(rows) else None,
           S.SPEECH_COVERAGE: _mean(rows[S.SPEECH_PRESENT].astype("float64")),
           S.VALENCE_MEAN: _mean(rows[S.VALENCE]), S.AROUSAL_MEAN: _mean(rows[S.AROUSAL]),
           S.VALENCE_Z_MEAN: _mean(rows[f"{S.VALENCE}{S.Z_SUFFIX}"]),
           S.AROUSAL_Z_MEAN: _mean(rows[f"{S.AROUSAL}{S.Z_SUFFIX}"])}
    for emotion, column in zip(S.EMOTIONS, S.SHARE_COLUMNS, strict=True):
        row[column] = float(np.mean(sure[S.DOMINANT_EMOTION] == emotion)) if len(sure) else None
    inside = [m for m in moments if span[0] <= m.peak_s < span[1]]
    for kind, column in zip(S.MOMENT_KINDS, S.MOMENT_COUNT_COLUMNS, strict=True):
        row[column] = sum(m.kind == kind for m in inside)
    strongest = max(inside, key=lambda m: m.score, default=None)
    row[S.STRONGEST_KIND] = strongest.kind if strongest else None
    row[S.STRONGEST_S] = strongest.peak_s if strongest else None
    row[S.STRONGEST_SCORE] = strongest.score if strongest else None
    return row


def summaries(track: pd.DataFrame, markers: list[Marker], duration_s: float,
              moments: list[Moment]) -> list[dict]:
    """The session row (task null) then one row per marker."""
    rows = [summarise(track, (0.0, duration_s), None, moments)]
    rows += [summarise(track, (m.start_s, m.end_s), m.task, moments) for m in markers]
    return rows


def task_at(markers: list[Marker], t: float) -> str | None:
    """The first marker's task whose span holds ``t``."""
    return next((m.task for m in markers if m.start_s <= t < m.end_s), None)
