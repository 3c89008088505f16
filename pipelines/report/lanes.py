"""A session's timeline as the page draws it: the lanes, decimated to what a screen shows.

A 60-minute session has 7,200 windows per track at a 0.5 s hop; a screen is under 2,000
pixels wide.  Windows are merged into at most ``max_points`` buckets of consecutive windows
(means of probabilities, valence/arousal and confidence; shares of windows for speech and
speaking; the most frequent dominant label, null when the most frequent is "uncertain"), so
the page parses and draws a fixed amount whatever the session's length.  The CSV export
keeps every window.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from operators import schema as S

# Buckets per lane: about the width in pixels of the timeline on a large screen, so nothing
# drawn is finer than a pixel.
MAX_POINTS = 1200

# Moment columns the page shows (operators.schema.MOMENT_SCHEMA).
MOMENT_FIELDS = (S.KIND, S.RANK, S.START_S, S.END_S, S.PEAK_S, S.SCORE, S.EVIDENCE, S.TASK,
                 S.TRACK_ID)


def _values(series: pd.Series) -> list[float | None]:
    """JSON numbers to 3 decimals, null for missing."""
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 3)
            for v in series.tolist()]


def _main_rows(timeline: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows the lanes show: the participant's track, or (no face tracked) the voice-only
    rows without a track; and how to name them."""
    participant = timeline[timeline[S.IS_PARTICIPANT].fillna(False).astype(bool)]
    if len(participant):
        return participant, "participant (track 0)"
    return timeline[timeline[S.TRACK_ID].isna()], "no face tracked: voice only"


def _columns(frame: pd.DataFrame, names) -> list[str]:
    return [c for c in names if c in frame.columns]


def lanes(timeline: pd.DataFrame, duration_s: float | None, max_points: int = MAX_POINTS
          ) -> dict:
    """The page's data for ``timeline`` (``TIMELINE_SCHEMA`` rows of one clip)."""
    timeline = timeline.sort_values([S.WINDOW_INDEX]).reset_index(drop=True)
    n_windows = int(timeline[S.WINDOW_INDEX].max()) + 1
    points = min(max_points, n_windows)
    bucket = (timeline[S.WINDOW_INDEX].astype(np.int64) * points) // n_windows
    timeline = timeline.assign(_bucket=bucket)
    grid = pd.RangeIndex(points)
    spans = timeline.groupby("_bucket").agg(t0=(S.WINDOW_START_S, "min"),
                                            t1=(S.WINDOW_END_S, "max")).reindex(grid)
    main, main_label = _main_rows(timeline)
    by_bucket = main.groupby("_bucket")

    def mean(column: str, frame: pd.DataFrame = main) -> list[float | None]:
        return _values(frame.groupby("_bucket")[column].mean().reindex(grid))

    def share(frame: pd.DataFrame, column: str) -> list[float | None]:
        values = frame[column].astype("float64")
        return _values(values.groupby(frame["_bucket"]).mean().reindex(grid))

    def probabilities(columns: tuple[str, ...], frame: pd.DataFrame = main
                      ) -> list[list[float | None]] | None:
        present = _columns(frame, columns)
        if not len(frame) or len(present) != len(columns) or frame[present].isna().all().all():
            return None
        return [mean(c, frame) for c in present]

    def label(values: pd.Series) -> str | None:
        counts = values.value_counts(dropna=False)
        top = counts.index[0] if len(counts) else None
        return None if top is None or (isinstance(top, float) and math.isnan(top)) else top

    dominant = by_bucket[S.DOMINANT_EMOTION].agg(label).reindex(grid)
    valence_arousal = {c: mean(c) for c in _columns(main, (
        S.VALENCE, S.AROUSAL, S.FACE_VALENCE, S.FACE_AROUSAL, S.VOICE_VALENCE, S.VOICE_AROUSAL))
        if main[c].notna().any()}
    speakers = []
    if S.SPEAKING in timeline.columns:
        for track, rows in timeline[timeline[S.TRACK_ID].notna()].groupby(S.TRACK_ID):
            name = "participant" if rows[S.IS_PARTICIPANT].fillna(False).any() else \
                f"face {int(track)}"
            if S.ON_SCREEN in rows.columns and rows[S.ON_SCREEN].fillna(False).any():
                name += " (on the screen)"
            speakers.append({"label": name, "values": share(rows.fillna({S.SPEAKING: False}),
                                                             S.SPEAKING)})
    offscreen = None
    if S.OFFSCREEN_SPEECH in timeline.columns and timeline[S.OFFSCREEN_SPEECH].notna().any():
        offscreen = share(timeline.fillna({S.OFFSCREEN_SPEECH: False}), S.OFFSCREEN_SPEECH)
    confidence = None
    if S.CONFIDENCE in main.columns and main[S.CONFIDENCE].notna().any():
        confidence = mean(S.CONFIDENCE)
    tasks = []
    if S.TASK in main.columns and main[S.TASK].notna().any():
        runs = main[[S.TASK, S.WINDOW_START_S, S.WINDOW_END_S]].dropna(subset=[S.TASK])
        change = runs[S.TASK].ne(runs[S.TASK].shift()).cumsum()
        for _, run in runs.groupby(change):
            tasks.append({"task": str(run[S.TASK].iloc[0]),
                          "start": float(run[S.WINDOW_START_S].min()),
                          "end": float(run[S.WINDOW_END_S].max())})
    end = float(timeline[S.WINDOW_END_S].max())
    return {
        "duration": max(end, float(duration_s or 0)),
        "windows": n_windows, "points": points, "rows": main_label,
        "t0": _values(spans["t0"]), "t1": _values(spans["t1"]),
        "fused": probabilities(S.PROB_COLUMNS),
        "face": probabilities(S.FACE_PROB_COLUMNS),
        "voice": probabilities(S.VOICE_PROB_COLUMNS),
        # Speech no face on screen was seen speaking (its own rows, without a track): the
        # voice model's reading of it, apart from the participant's.
        "offscreen_voice": probabilities(S.VOICE_PROB_COLUMNS, timeline[
            timeline[S.TRACK_ID].isna()]) if main_label.startswith("participant") else None,
        "dominant": [None if v is None or (isinstance(v, float) and math.isnan(v)) else v
                     for v in dominant.tolist()],
        "va": valence_arousal,
        "confidence": confidence,
        "speech": share(main.fillna({S.SPEECH_RATIO: 0.0}), S.SPEECH_RATIO)
        if main[S.SPEECH_RATIO].notna().any() else None,
        "speakers": speakers, "offscreen": offscreen, "tasks": tasks,
    }


def moments(table: pd.DataFrame | None) -> list[dict]:
    """The session's moments for the page, in time order."""
    if table is None or not len(table):
        return []
    rows = table.sort_values(S.START_S)
    out = []
    for row in rows.to_dict("records"):
        item = {}
        for column in MOMENT_FIELDS:
            value = row.get(column)
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, np.generic):
                value = value.item()
            item[column] = value
        out.append(item)
    return out
