"""Writer: declared schemas on disk, idempotent file names, stale timelines removed."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from operators import schema as S
from operators.io.write_outputs import TimelineWriter, WriterConfig, clip_uri, timeline_uri


def _timeline_row(window: int) -> dict:
    row = {f.name: None for f in S.TIMELINE_SCHEMA}
    row.update({S.CLIP_ID: "abc", S.URI: "/in/a.mp4", S.WINDOW_INDEX: window,
                S.WINDOW_START_S: window * 0.5, S.WINDOW_END_S: window * 0.5 + 1,
                S.FACE_PRESENT: False, S.FACE_FRAMES: 0})
    return row


def _batch(n_windows: int, status: str = "ok") -> pa.Table:
    summary = {f.name: None for f in S.CLIP_SCHEMA if f.name not in (
        S.RUN_ID, S.DETECTOR, S.FACE_MODEL, S.PROCESSED_AT)}
    summary.update({S.CLIP_ID: "abc", S.URI: "/in/a.mp4", S.STATUS: status, S.ERROR: "",
                    S.DURATION_S: float("nan") if status != "ok" else 2.0,
                    S.HAS_AUDIO: False, S.FRAMES_SAMPLED: 10, S.FACE_TRACKS: 0,
                    S.SIZE_BYTES: 5, S.VIDEO_DECODER: "pyav" if status == "ok" else ""})
    table = pa.Table.from_pylist([summary])
    timeline = pa.array([[_timeline_row(w) for w in range(n_windows)]],
                        type=pa.list_(pa.struct(list(S.TIMELINE_SCHEMA))))
    return table.append_column(S.TIMELINE, timeline)


def test_writes_declared_schemas_and_replaces_on_rerun(tmp_path):
    writer = TimelineWriter(WriterConfig(out=str(tmp_path), storage_options={}, run_id="r1",
                                         detector="d", face_model="m"))
    out = writer(_batch(4))
    assert out.schema == S.CLIP_SCHEMA and out.num_rows == 1
    timeline = pq.read_table(timeline_uri(str(tmp_path), "abc"))
    assert timeline.schema == S.TIMELINE_SCHEMA and timeline.num_rows == 4
    clip = pq.read_table(clip_uri(str(tmp_path), "abc"))
    assert clip.schema == S.CLIP_SCHEMA
    row = clip.to_pylist()[0]
    assert row[S.ERROR] is None and row[S.RUN_ID] == "r1" and row[S.DETECTOR] == "d"
    assert row[S.FACE_MODEL] is None  # no face track: no face model was applied
    assert row[S.VIDEO_DECODER] == "pyav"

    writer(_batch(3))  # a re-run replaces, it does not add
    assert pq.read_table(tmp_path / "timelines").num_rows == 3
    assert pq.read_table(tmp_path / "clips").num_rows == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_failed_clip_removes_stale_timeline_and_nulls_media_facts(tmp_path):
    writer = TimelineWriter(WriterConfig(out=str(tmp_path), storage_options={}, run_id="r",
                                         detector="d", face_model="m"))
    writer(_batch(2))
    writer(_batch(0, status="decode_error"))
    assert not (tmp_path / "timelines" / "abc.parquet").exists()
    row = pq.read_table(clip_uri(str(tmp_path), "abc")).to_pylist()[0]
    assert row[S.STATUS] == "decode_error" and row[S.DURATION_S] is None
    assert row[S.HAS_AUDIO] is None
    assert row[S.VIDEO_DECODER] is None  # no decoder read a frame ("" on the chunk rows)
