"""The findings rules on synthetic timelines (no Ray): baselines, moments, summaries, and
the step's output against the data contract."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from operators import schema as S
from operators.findings.baseline import add_baseline
from operators.findings.config import FindingsConfig
from operators.findings.context import ClipContext, Marker
from operators.findings.find_moments import Findings, moments_frame
from operators.step import StepRunner, check_plan
from tests.operators.findings.synthetic import timeline

PLANTED = [("angry", 30, 42), ("happy", 60, 70), ("surprise", 85, 92), ("sad", 100, 110)]
KIND_OF = {"angry": "frustration", "sad": "frustration", "happy": "delight",
           "surprise": "surprise"}


def test_each_planted_stretch_is_one_moment_of_its_kind_and_neutral_gives_none():
    moments = moments_frame(timeline(120, PLANTED), FindingsConfig())
    assert len(moments) == len(PLANTED)
    for emotion, start, end in PLANTED:
        hit = moments[(moments.start_s < end) & (moments.end_s > start)]
        assert list(hit.kind) == [KIND_OF[emotion]], (emotion, moments)
        # the moment covers the stretch to within a window and a hop at each edge
        assert abs(hit.start_s.iloc[0] - start) <= 1.0 and abs(hit.end_s.iloc[0] - end) <= 1.0
        assert start <= hit.peak_s.iloc[0] <= end
    assert list(moments.score) == sorted(moments.score, reverse=True)
    angry = moments[moments.kind == "frustration"].sort_values("start_s").iloc[0]
    assert "p_angry" in angry.evidence and "face" in angry.evidence
    assert "loudness_db" in angry.evidence  # planted with a louder voice


def test_minimum_duration_and_merge_gap():
    short = timeline(120, [("happy", 60, 61.5)])
    assert moments_frame(short, FindingsConfig()).empty
    split = timeline(120, [("happy", 60, 66), ("happy", 67, 73)])
    merged = moments_frame(split, FindingsConfig())
    assert len(merged) == 1 and merged.start_s.iloc[0] < 61 and merged.end_s.iloc[0] > 72
    strict = FindingsConfig(smooth_s=0.0, delight={"threshold": 2.0, "min_duration_s": 3.0,
                                                   "merge_gap_s": 0.0})
    assert len(moments_frame(split, strict)) == 2
    # smoothing bridges the two neutral windows between the stretches without a merge gap
    assert len(moments_frame(split, strict.model_copy(update={"smooth_s": 2.0}))) == 1


def test_smoothing_keeps_one_window_from_making_a_moment():
    blip = timeline(120, [("happy", 60, 60.5)])  # one window
    rule = {"threshold": 4.0, "min_duration_s": 0.0, "merge_gap_s": 0.0}
    assert len(moments_frame(blip, FindingsConfig(smooth_s=0.0, delight=rule))) == 1
    assert moments_frame(blip, FindingsConfig(smooth_s=2.0, delight=rule)).empty


def test_moments_come_from_confident_windows_only():
    unsure = timeline(120, [("angry", 30, 42)], unsure=(25, 45))
    assert moments_frame(unsure, FindingsConfig()).empty


def test_baseline_is_the_baseline_task_when_given_and_robust_to_the_planted_stretches():
    frame = timeline(120, PLANTED)
    _, session = add_baseline(frame, FindingsConfig(), None)
    _, task = add_baseline(frame, FindingsConfig(), (0.0, 25.0))
    assert session[0].source == "session" and session[0].windows == len(frame)
    assert task[0].source == "baseline_task" and task[0].windows == 49
    # medians of a neutral face either way: a third of the session planted moves them little
    for base in (session[0], task[0]):
        assert base.median[S.PROB_COLUMNS[-1]] > 0.5 and abs(base.median[S.VALENCE]) < 0.1


def test_too_few_confident_windows_give_no_baseline_and_no_moments():
    frame = timeline(120, PLANTED, unsure=(5, 120))
    z, baselines = add_baseline(frame, FindingsConfig(), None)
    assert baselines[0].source == "insufficient" and baselines[0].windows < 20
    assert z[list(S.Z_COLUMNS)].isna().all().all()
    assert moments_frame(frame, FindingsConfig()).empty


def _batch(frames, duration=120.0):
    rows = []
    for i, frame in enumerate(frames):
        rows.append({S.CLIP_ID: f"{i:016d}", S.URI: f"/rec/{i}.mp4", S.DURATION_S: duration,
                     S.TIMELINE: frame.assign(**{S.CLIP_ID: f"{i:016d}"}).to_dict("records")})
    schema = pa.schema([S.CLIP_SUMMARY_SCHEMA.field(c)
                        for c in (S.CLIP_ID, S.URI, S.DURATION_S, S.TIMELINE)])
    return pa.Table.from_pylist(rows, schema=schema)


def test_the_step_writes_moments_summaries_baselines_and_warnings_by_the_contract():
    stamp = datetime(2026, 5, 4, 10, 30, tzinfo=UTC)
    markers = (Marker("baseline", 0, 25, "t.csv row 2"), Marker("checkout", 25, 80,
                                                                 "t.csv row 3"),
               Marker("late", 110, 150, "t.csv row 4"))
    context = ClipContext({S.PARTICIPANT: "P07", S.STUDY: "shop", S.SESSION: "s1",
                           S.RECORDED_AT: stamp}, markers, ("t.csv row 5: bad",))
    empty = timeline(120, [])[:0]
    batch = _batch([timeline(120, PLANTED), empty])
    step = Findings(FindingsConfig(), {f"{0:016d}": context})
    out = check_plan([step], batch.schema)[0]
    result = StepRunner(step, out)(batch)
    assert result.schema.equals(out)
    first, second = result.slice(0, 1).to_pylist()[0], result.slice(1, 1).to_pylist()[0]

    assert first[S.WARNINGS][0] == "t.csv row 5: bad"
    assert "t.csv row 4" in first[S.WARNINGS][1] and "past the recording's end" in (
        first[S.WARNINGS][1])
    assert first[S.BASELINE_SOURCE] == "baseline_task" and first[S.BASELINE_WINDOWS] == 49
    assert (first[S.PARTICIPANT], first[S.RECORDED_AT]) == ("P07", stamp)
    moments = pa.Table.from_pylist(first[S.MOMENTS], schema=S.MOMENT_SCHEMA)
    assert moments.num_rows == 4 and moments.column(S.RANK).to_pylist() == [1, 2, 3, 4]
    tasks = {(m[S.KIND], m[S.TASK]) for m in first[S.MOMENTS]}
    assert ("frustration", "checkout") in tasks and ("delight", "checkout") in tasks
    assert ("surprise", None) in tasks
    segments = pa.Table.from_pylist(first[S.SEGMENTS], schema=S.SEGMENT_SCHEMA).to_pylist()
    assert [s[S.TASK] for s in segments] == [None, "baseline", "checkout"]
    session, base, checkout = segments
    assert session[S.WINDOWS] == 239 and session[S.FACE_COVERAGE] == pytest.approx(1.0)
    assert [session[c] for c in S.MOMENT_COUNT_COLUMNS] == [2, 0, 1, 1]
    assert [checkout[c] for c in S.MOMENT_COUNT_COLUMNS] == [1, 0, 1, 0]
    assert sum(base[c] for c in S.MOMENT_COUNT_COLUMNS) == 0
    assert base[S.VALENCE_Z_MEAN] == pytest.approx(0.0, abs=0.5)
    assert checkout[S.STRONGEST_KIND] in ("frustration", "delight")
    assert checkout[S.SHARE_COLUMNS[S.EMOTIONS.index("neutral")]] > 0.5

    written = pa.Table.from_pylist(first[S.TIMELINE], schema=S.TIMELINE_SCHEMA).to_pandas()
    assert (written[S.PARTICIPANT] == "P07").all()
    assert written.loc[written.window_start_s == 50.0, S.TASK].item() == "checkout"
    assert written.loc[written.window_start_s == 95.0, S.TASK].isna().all()
    angry = written[(written.window_start_s >= 32) & (written.window_start_s < 40)]
    assert (angry["p_angry_z"] > 5).all() and (angry["valence_z"] < -2).all()
    assert np.isfinite(written["p_neutral_z"]).all()

    assert second[S.MOMENTS] == [] and second[S.SEGMENTS] == [] and second[S.TIMELINE] == []
    assert second[S.BASELINE_SOURCE] is None and second[S.PARTICIPANT] is None
