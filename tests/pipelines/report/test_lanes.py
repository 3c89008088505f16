"""The page's lanes from timeline rows: decimation keeps what the windows say (plain Python,
no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from operators import schema as S
from pipelines.report.lanes import lanes


def timeline(windows: int, *, face_until: int | None = None) -> pd.DataFrame:
    """Participant rows at a 0.5 s hop: happy with certainty in the first half, then
    uncertain (no dominant label); a face only before ``face_until``."""
    start = np.arange(windows) * 0.5
    happy = (np.arange(windows) < windows // 2).astype(np.float32)
    face = np.arange(windows) < (windows if face_until is None else face_until)
    rows = {S.CLIP_ID: ["c"] * windows, S.URI: ["u"] * windows, S.TRACK_ID: [0] * windows,
            S.IS_PARTICIPANT: [True] * windows,
            S.WINDOW_INDEX: np.arange(windows, dtype=np.int32), S.WINDOW_START_S: start,
            S.WINDOW_END_S: start + 1.0, S.FACE_PRESENT: face, S.FACE_FRAMES: face * 5,
            S.DOMINANT_EMOTION: np.where(happy > 0, "happy", None),
            S.SPEECH_RATIO: np.full(windows, 0.25, np.float32),
            S.SPEAKING: np.arange(windows) % 2 == 0}
    for i, emotion in enumerate(S.EMOTIONS):
        value = happy if emotion == "happy" else (1 - happy) / (len(S.EMOTIONS) - 1)
        rows[S.PROB_COLUMNS[i]] = value
        rows[S.FACE_PROB_COLUMNS[i]] = np.where(face, value, np.nan)
    table = pa.Table.from_pydict({f.name: rows.get(f.name, [None] * windows)
                                  for f in S.TIMELINE_SCHEMA}, schema=S.TIMELINE_SCHEMA)
    return table.to_pandas()


def test_an_hour_is_drawn_as_a_fixed_number_of_points():
    data = lanes(timeline(7200), 3600.0, max_points=1200)
    assert data["points"] == 1200 and data["windows"] == 7200
    assert len(data["t0"]) == len(data["fused"][0]) == 1200
    assert data["t0"][0] == 0.0 and data["t1"][-1] == 3600.5
    happy = data["fused"][S.EMOTIONS.index("happy")]
    assert happy[:600] == [1.0] * 600 and happy[600:] == [0.0] * 600
    assert data["dominant"][:600] == ["happy"] * 600 and data["dominant"][600:] == [None] * 600
    assert data["speech"] == [0.25] * 1200
    # Six windows a bucket, every other one speaking.
    assert data["speakers"] == [{"label": "participant", "values": [0.5] * 1200}]


def test_short_sessions_keep_every_window_and_missing_faces_stay_missing():
    data = lanes(timeline(40, face_until=10), 20.0)
    assert data["points"] == 40
    face_happy = data["face"][S.EMOTIONS.index("happy")]
    assert all(v == 1.0 for v in face_happy[:10]) and face_happy[10:] == [None] * 30
    assert data["voice"] is None and data["confidence"] is None and data["tasks"] == []
