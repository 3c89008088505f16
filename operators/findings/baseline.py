"""Each track against its own baseline: robust statistics and baseline-relative values.

Pure pandas on one clip's timeline (``TIMELINE_SCHEMA`` columns), used by the findings step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from operators import schema as S
from operators.findings.config import FindingsConfig

MAD_TO_SD = 1.4826
"""MAD × this estimates the standard deviation of normally distributed values."""


@dataclass(frozen=True)
class Baseline:
    """One track's baseline: where it came from (``schema.BASELINE_SOURCES``), how many
    confident windows it used, and per signal its median and robust spread (None:
    ``insufficient``)."""

    source: str
    windows: int
    median: dict[str, float] | None = None
    spread: dict[str, float] | None = None


def floor_of(signal: str, config: FindingsConfig) -> float:
    if signal == S.PITCH_HZ:
        return config.pitch_floor_hz
    if signal == S.LOUDNESS_DB:
        return config.loudness_floor_db
    if "valence" in signal or "arousal" in signal:
        return config.valence_arousal_floor
    return config.probability_floor


def window_mid(timeline: pd.DataFrame) -> pd.Series:
    return (timeline[S.WINDOW_START_S] + timeline[S.WINDOW_END_S]) / 2


def confident(timeline: pd.DataFrame) -> pd.Series:
    """Windows with an estimate the timeline trusts: a dominant emotion (null below the
    confidence threshold, or where neither face nor speech was present)."""
    return timeline[S.DOMINANT_EMOTION].notna()


def track_baseline(track: pd.DataFrame, config: FindingsConfig,
                   baseline_span: tuple[float, float] | None) -> Baseline:
    """The baseline of one track's windows: its confident windows inside ``baseline_span``
    (a ``baseline`` task) when there are enough, else all its confident windows, else
    ``insufficient``."""
    sure = track[confident(track)]
    candidates = []
    if baseline_span is not None:
        mid = window_mid(sure)
        candidates.append(("baseline_task",
                           sure[(mid >= baseline_span[0]) & (mid < baseline_span[1])]))
    candidates.append(("session", sure))
    for source, rows in candidates:
        if len(rows) >= config.min_baseline_windows:
            median, spread = {}, {}
            for signal in S.BASELINE_SIGNALS:
                values = rows[signal].dropna().to_numpy(np.float64)
                if not len(values):
                    continue
                med = float(np.median(values))
                mad = float(np.median(np.abs(values - med)))
                median[signal] = med
                spread[signal] = max(MAD_TO_SD * mad, floor_of(signal, config))
            return Baseline(source, len(rows), median, spread)
    return Baseline("insufficient", len(sure))


def track_key(value: object) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def add_baseline(timeline: pd.DataFrame, config: FindingsConfig,
                 baseline_span: tuple[float, float] | None
                 ) -> tuple[pd.DataFrame, dict[int | None, Baseline]]:
    """``timeline`` with the ``schema.Z_COLUMNS`` filled per track, and each track's
    :class:`Baseline` (key: track id, None for the rows without a face track)."""
    out = timeline.copy()
    for column in S.Z_COLUMNS:
        out[column] = np.nan
    baselines: dict[int | None, Baseline] = {}
    for key, track in out.groupby(S.TRACK_ID, dropna=False, sort=False):
        base = track_baseline(track, config, baseline_span)
        baselines[track_key(key)] = base
        if base.median is None:
            continue
        for signal, med in base.median.items():
            out.loc[track.index, f"{signal}{S.Z_SUFFIX}"] = (
                (track[signal].astype(np.float64) - med) / base.spread[signal])
    return out, baselines
