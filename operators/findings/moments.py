"""Moments: frustration, confusion, delight and surprise, as rules on baseline-relative
signals of confident windows (README: Findings).

Per window of a track, with ``z(x)`` the baseline-relative value of signal ``x`` (fused
probabilities ``p_*``, ``valence``, ``arousal``; voice ``loudness_db``/``pitch_hz``) and
``v``, ``e``, ``a`` the config's ``valence_shift``, ``emotion_rise``, ``arousal_rise``:

* **frustration**: z(valence) ≤ −v and max z(p_angry, p_disgust, p_sad) ≥ e;
  score = (−z(valence) + that max) / 2 + ½ max(z(loudness_db), z(pitch_hz), 0): a sustained
  negative shift with anger, disgust or sadness rising; a louder or higher voice adds to it.
* **delight**: z(valence) ≥ v and z(p_happy) ≥ e; score = (z(valence) + z(p_happy)) / 2
  + ½ max(z(arousal), 0).
* **surprise**: max z(p_surprise, p_fear) ≥ e and z(arousal) ≥ a; score = (that max +
  z(arousal)) / 2.
* **confusion**: z(valence) ≤ −v and z(p_neutral) ≤ −e while no basic emotion rises (every
  other z(p_*) < e): the face and voice leave neutral towards the negative without a clear
  anger, disgust, sadness, fear or surprise; score = (−z(valence) − z(p_neutral)) / 2.  The
  FER2013/RAVDESS classes have no confusion, so this rule is the least validated (see
  ``pipelines/findings/CARD.md``).

Each kind's window scores are then **smoothed**: the mean over a centred span of
``smooth_s`` seconds of the confident windows, where a window whose conditions do not hold
counts 0, so one noisy window neither makes a moment nor breaks one, and a few unconfident
windows inside a sustained shift do not cut it in two.  A window is active for a kind when it
is confident (``dominant_emotion`` not null) and its smoothed score reaches the kind's
``threshold``.  Active windows
of a kind closer than ``merge_gap_s`` form one moment, kept when it lasts at least
``min_duration_s``; its ``score`` is its peak window's, ``peak_s`` that window's middle, and
``evidence`` the mean z of each driving signal over the active windows (those of |z| ≥ 1),
with the face's and the voice's own values where the timeline has them (``face_p_*_z``,
``voice_p_*_z``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from operators import schema as S
from operators.findings.baseline import confident, track_key, window_mid
from operators.findings.config import FindingsConfig


def z(timeline: pd.DataFrame, signal: str) -> pd.Series:
    return timeline[f"{signal}{S.Z_SUFFIX}"].astype(np.float64)


def _max_z(timeline: pd.DataFrame, emotions: tuple[str, ...]) -> pd.Series:
    return pd.concat([z(timeline, f"p_{e}") for e in emotions], axis=1).max(axis=1)


DRIVERS: dict[str, tuple[str, ...]] = {
    "frustration": ("valence", "p_angry", "p_disgust", "p_sad", "loudness_db", "pitch_hz"),
    "confusion": ("valence", "p_neutral"),
    "delight": ("valence", "p_happy", "arousal"),
    "surprise": ("p_surprise", "p_fear", "arousal"),
}
"""The signals each rule reads, reported in a moment's evidence."""
EVIDENCE_Z = 1.0
"""Drivers whose mean |z| over the moment is below this are left out of its evidence."""


def window_scores(timeline: pd.DataFrame, config: FindingsConfig) -> dict[str, pd.Series]:
    """Per kind, each window's smoothed score (``timeline``: one track's windows in time
    order); NaN on windows that are not confident."""
    valence, arousal = z(timeline, S.VALENCE), z(timeline, S.AROUSAL)
    v, e, a = config.valence_shift, config.emotion_rise, config.arousal_rise
    negative = _max_z(timeline, ("angry", "disgust", "sad"))
    voice_up = pd.concat([z(timeline, S.LOUDNESS_DB), z(timeline, S.PITCH_HZ)],
                         axis=1).max(axis=1).fillna(0.0).clip(lower=0.0)
    startle = _max_z(timeline, ("surprise", "fear"))
    others = _max_z(timeline, ("angry", "disgust", "sad", "fear", "surprise", "happy"))
    neutral, happy = z(timeline, "p_neutral"), z(timeline, "p_happy")
    rules = {
        "frustration": ((valence <= -v) & (negative >= e),
                        (-valence + negative) / 2 + voice_up / 2),
        "confusion": ((valence <= -v) & (neutral <= -e) & (others < e),
                      (-valence - neutral) / 2),
        "delight": ((valence >= v) & (happy >= e),
                    (valence + happy) / 2 + arousal.clip(lower=0.0).fillna(0.0) / 2),
        "surprise": ((startle >= e) & (arousal >= a), (startle + arousal) / 2),
    }
    sure = confident(timeline)
    span = _span_windows(timeline, config.smooth_s)
    return {kind: score.where(holds, 0.0).where(sure)
            .rolling(span, center=True, min_periods=1).mean().where(sure)
            for kind, (holds, score) in rules.items()}


def _span_windows(timeline: pd.DataFrame, seconds: float) -> int:
    """How many windows (an odd number, at least 1) cover ``seconds`` at the timeline's hop."""
    starts = timeline[S.WINDOW_START_S].to_numpy()
    if len(starts) < 2 or seconds <= 0:
        return 1
    hop = float(np.median(np.diff(starts)))
    return int(seconds / hop) // 2 * 2 + 1 if hop > 0 else 1


@dataclass(frozen=True)
class Moment:
    track_id: int | None
    kind: str
    start_s: float
    end_s: float
    peak_s: float
    score: float
    evidence: str


def _evidence(rows: pd.DataFrame, kind: str) -> str:
    """``signal z`` per driver (mean over the moment's active windows), with the face's and
    the voice's own values where the timeline has them."""
    parts = []
    for signal in DRIVERS[kind]:
        fused = rows[f"{signal}{S.Z_SUFFIX}"].mean()
        if pd.isna(fused) or abs(fused) < EVIDENCE_Z:
            continue
        text = f"{signal} {fused:+.1f}"
        if signal.startswith("p_"):
            own = [f"{m} {rows[f'{m}_{signal}{S.Z_SUFFIX}'].mean():+.1f}"
                   for m in ("face", "voice")
                   if rows[f"{m}_{signal}{S.Z_SUFFIX}"].notna().any()]
            if own:
                text += f" ({', '.join(own)})"
        elif signal in (S.LOUDNESS_DB, S.PITCH_HZ):
            text += " (voice)"
        parts.append(text)
    return "; ".join(parts)


def track_moments(track: pd.DataFrame, config: FindingsConfig) -> list[Moment]:
    """The moments of one track's windows (sorted by start), from its ``*_z`` columns."""
    track = track.sort_values(S.WINDOW_START_S)
    mid = window_mid(track).to_numpy()
    starts = track[S.WINDOW_START_S].to_numpy()
    ends = track[S.WINDOW_END_S].to_numpy()
    key = track_key(track[S.TRACK_ID].iloc[0]) if len(track) else None
    moments = []
    for kind, scores in window_scores(track, config).items():
        rule = config.rule(kind)
        active = np.flatnonzero((scores >= rule.threshold).to_numpy())
        if not len(active):
            continue
        runs, first = [], active[0]
        for prev, cur in itertools.pairwise(active):
            if starts[cur] - ends[prev] > rule.merge_gap_s:
                runs.append((first, prev))
                first = cur
        runs.append((first, active[-1]))
        for lo, hi in runs:
            if ends[hi] - starts[lo] < rule.min_duration_s:
                continue
            inside = active[(active >= lo) & (active <= hi)]
            peak = inside[int(np.argmax(scores.to_numpy()[inside]))]
            moments.append(Moment(key, kind, float(starts[lo]), float(ends[hi]),
                                  float(mid[peak]), float(scores.iloc[peak]),
                                  _evidence(track.iloc[inside], kind)))
    return sorted(moments, key=lambda m: m.start_s)


def find_moments(timeline: pd.DataFrame, config: FindingsConfig,
                 tracks: set[int | None]) -> list[Moment]:
    """Moments of the given tracks (those with a baseline), strongest first."""
    found: list[Moment] = []
    for key, track in timeline.groupby(S.TRACK_ID, dropna=False, sort=False):
        if track_key(key) in tracks:
            found += track_moments(track, config)
    return sorted(found, key=lambda m: -m.score)
