"""Synthetic timelines for the findings rules: a participant's windows on the 0.5 s hop
grid, neutral with seeded noise, with chosen stretches where an expression is planted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.emotions import CIRCUMPLEX
from operators import schema as S

HOP_S = 0.5
WINDOW_S = 1.0


def probabilities(emotion: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A probability vector leaning ``strength`` towards ``emotion`` over a neutral face."""
    p = np.full(len(S.EMOTIONS), 0.04) + rng.uniform(0, 0.03, len(S.EMOTIONS))
    p[S.EMOTIONS.index("neutral")] += 0.6 * (1 - strength)
    p[S.EMOTIONS.index(emotion)] += strength
    return p / p.sum()


def timeline(duration_s: float, planted: list[tuple[str, float, float]], *, seed: int = 0,
             track_id: int | None = 0, unsure: tuple[float, float] | None = None
             ) -> pd.DataFrame:
    """Windows of one track; ``planted``: (emotion, start, end) stretches at strength 0.7
    with a louder voice; ``unsure``: a span whose windows have no dominant emotion."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(int((duration_s - WINDOW_S) / HOP_S) + 1):
        start = i * HOP_S
        mid = start + WINDOW_S / 2
        emotion = next((e for e, a, b in planted if a <= mid < b), None)
        p = probabilities(emotion or "neutral", 0.7 if emotion else 0.0, rng)
        valence = float(sum(q * CIRCUMPLEX[e][0] for q, e in zip(p, S.EMOTIONS, strict=True)))
        arousal = float(sum(q * CIRCUMPLEX[e][1] for q, e in zip(p, S.EMOTIONS, strict=True)))
        row = {S.CLIP_ID: "c" * 16, S.URI: "/x.mp4", S.TRACK_ID: track_id,
               S.IS_PARTICIPANT: track_id == 0, S.WINDOW_INDEX: i, S.WINDOW_START_S: start,
               S.WINDOW_END_S: start + WINDOW_S, S.FACE_PRESENT: True, S.FACE_FRAMES: 5,
               S.DOMINANT_EMOTION: S.EMOTIONS[int(np.argmax(p))],
               S.VALENCE: valence, S.AROUSAL: arousal,
               S.SPEECH_PRESENT: True, S.PITCH_HZ: 180 + rng.normal(0, 5),
               S.LOUDNESS_DB: -26 + rng.normal(0, 1) + (8 if emotion == "angry" else 0)}
        for column, value in zip(S.PROB_COLUMNS, p, strict=True):
            row[column] = float(value)
        for column, value in zip(S.FACE_PROB_COLUMNS, p, strict=True):
            row[column] = float(value)
        if unsure and unsure[0] <= mid < unsure[1]:
            row[S.DOMINANT_EMOTION] = None
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in S.TIMELINE_SCHEMA.names:
        if column not in frame:
            frame[column] = None
    return frame[S.TIMELINE_SCHEMA.names]
