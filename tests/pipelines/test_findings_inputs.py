"""Session metadata and task markers on the driver (no Ray): manifest columns, ``--tasks``
rows matched by URI or file name, sidecar files, and the warnings of bad rows."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from infra.storage import InputError, StorageConfig, list_inputs
from operators import schema as S
from operators.findings.context import Marker, usable_markers
from pipelines.emotion_timeline.sessions import clip_contexts, parse_markers


@pytest.fixture
def recordings(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("s1.mp4", "s2.mp4"):
            (tmp_path / folder / name).write_bytes(b"x")
    (tmp_path / "a" / "s1.tasks.csv").write_text(
        "task,start_s,end_s\nbaseline,0,20\nsearch,20,abc\n")
    return tmp_path


def _contexts(spec, tasks=None):
    inputs = list_inputs(str(spec), StorageConfig(), S.VIDEO_EXTENSIONS)
    return {ref.uri: clip_contexts(str(spec), inputs, StorageConfig(), tasks)[
        S.clip_id_for(ref.uri)] for ref in inputs}


def test_sidecar_markers_are_picked_up_and_bad_rows_become_warnings(recordings):
    contexts = _contexts(recordings)
    s1 = contexts[str(recordings / "a" / "s1.mp4")]
    assert s1.markers == (Marker("baseline", 0.0, 20.0, "s1.tasks.csv row 2"),)
    assert s1.warnings == ("s1.tasks.csv row 3: start_s '20' / end_s 'abc' are not numbers; "
                           "marker ignored",)
    assert contexts[str(recordings / "b" / "s1.mp4")].markers == ()


def test_tasks_file_rows_by_uri_or_unique_file_name(recordings, tmp_path, caplog):
    tasks = tmp_path / "tasks.csv"
    tasks.write_text("uri,task,start_s,end_s\n"
                     f"{recordings / 'b' / 's2.mp4'},checkout,5,9\n"  # row 2: full path
                     "s1.mp4,search,1,2\n"  # row 3: two recordings are named s1.mp4
                     "gone.mp4,search,1,2\n"  # row 4: not an input
                     "s2.mp4,search,9,9\n"  # row 5: end = start (both s2 get it)
                     f"{recordings / 'a' / 's2.mp4'},,1,2\n")  # row 6: no task
    with caplog.at_level(logging.WARNING):
        contexts = _contexts(recordings, str(tasks))
    b2 = contexts[str(recordings / "b" / "s2.mp4")]
    assert b2.markers == (Marker("checkout", 5.0, 9.0, "tasks.csv row 2"),)
    assert b2.warnings == ("tasks.csv row 5: end_s 9 ≤ start_s 9; marker ignored",)
    a1 = contexts[str(recordings / "a" / "s1.mp4")]
    assert "tasks.csv row 3: file name 's1.mp4' names 2 recordings; marker ignored" in (
        a1.warnings)
    assert contexts[str(recordings / "a" / "s2.mp4")].warnings == (
        "tasks.csv row 5: end_s 9 ≤ start_s 9; marker ignored",
        "tasks.csv row 6: no task name; marker ignored")
    assert "tasks.csv row 4: recording 'gone.mp4' is not among this run's inputs" in (
        caplog.text)
    with pytest.raises(InputError, match=r"tasks file .*missing\.csv.* cannot be read"):
        _contexts(recordings, str(tmp_path / "missing.csv"))


def test_manifest_metadata_is_carried_and_a_bad_time_is_a_warning(recordings, tmp_path):
    manifest = tmp_path / "study.csv"
    manifest.write_text("uri,participant,study,session,recorded_at,notes\n"
                        f"{recordings / 'a' / 's1.mp4'},P1,shop,2,2026-05-04 12:30+02:00,x\n"
                        f"{recordings / 'a' / 's2.mp4'},P2,,,last tuesday,\n")
    contexts = _contexts(manifest)
    first = contexts[str(recordings / "a" / "s1.mp4")]
    assert first.metadata == {S.PARTICIPANT: "P1", S.STUDY: "shop", S.SESSION: "2",
                              S.RECORDED_AT: datetime(2026, 5, 4, 10, 30, tzinfo=UTC)}
    second = contexts[str(recordings / "a" / "s2.mp4")]
    assert second.metadata == {S.PARTICIPANT: "P2", S.STUDY: None, S.SESSION: None,
                               S.RECORDED_AT: None}
    assert second.warnings == ("study.csv row 3: recorded_at 'last tuesday' is not an "
                               "ISO 8601 time; left null",)
    assert first.markers[0].task == "baseline"  # the sidecar still counts


def test_markers_past_the_end_are_refused_within_a_tolerance():
    markers = (Marker("a", 0, 60.5, "r2"), Marker("b", 50, 70, "r3"))
    kept, warnings = usable_markers(markers, 60.0, 1.0)
    assert kept == [markers[0]]
    assert warnings == ["r3: task 'b' 50–70 s lies past the recording's end (60.0 s); "
                        "marker ignored"]
    assert usable_markers(markers, float("nan"), 1.0) == (list(markers), [])


def test_a_tasks_file_without_the_columns_is_one_warning():
    markers, warnings = parse_markers("uri,name\nx.mp4,a\n", "t.csv", need_uri=True)
    assert markers == [] and "no column(s) task, start_s, end_s" in warnings[0][1]
