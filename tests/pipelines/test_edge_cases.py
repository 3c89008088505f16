"""Reliability: one run of the timeline job over every edge case of the "Reliability" issue.

The folder holds the generated fixture cases (``pipelines/sample_media/build.CASES``: truncated,
empty, text, audio-only, no audio, silence, no face, face leaving, two faces, picture-in-picture)
and the edge cases of ``pipelines/sample_media/edge_cases.EDGE_CASES`` (random bytes, portrait
with rotation metadata, variable frame rate, 1×1, 4K, 0.5 s, five containers and a browser
webm, a non-ASCII name, a damaged middle), all real ffmpeg-made files.  The job runs once, on
the session's local Ray; each test checks what the run wrote for one kind of input.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from operators import schema as S
from operators.io.decode_frames import working_size
from operators.vision.detect_faces import FaceDetector, FaceDetectorConfig
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run
from pipelines.sample_media import build as sample_build
from pipelines.sample_media.build import CASES, recording_speech_intervals
from pipelines.sample_media.edge_cases import (
    CORRUPT_AUDIO_SPAN_S,
    CORRUPT_SPAN_S,
    EDGE_CASES,
    VFR_SEGMENTS,
    make_edge_cases,
)

pytestmark = pytest.mark.integration

HOP_S = 0.5
SAMPLE_FPS = 5
WORKING_MAX_SIDE = 640
# Statuses whose clips have a timeline file.
WITH_TIMELINE = {"ok", "no_face", "no_audio", "partial"}


@pytest.fixture(scope="module")
def job(media, ray_local, tmp_path_factory):
    """Every case in one folder, one run of the job; what it returned and wrote."""
    folder = tmp_path_factory.mktemp("edge-inputs")
    files = {name: path.name for name, path in make_edge_cases(folder).items()}
    for name, path in media.items():
        shutil.copy(path, folder / path.name)
        files[name] = path.name
    out = tmp_path_factory.mktemp("edge-out")
    config = load_config(None, ["tracking.enabled=false"])
    result = run(str(folder), str(out), config)
    clips = result.clips.set_index(result.clips[S.URI].map(lambda uri: Path(uri).name))
    timelines = pd.read_parquet(out / "timelines")
    timelines["file"] = timelines[S.URI].map(lambda uri: Path(uri).name)
    return {"folder": folder, "out": out, "files": files, "clips": clips,
            "timelines": timelines, "config": config}


def _expected(name: str) -> tuple[str, str | None]:
    """(status, error pattern) of a case: ``None`` where the message must be null."""
    if name in EDGE_CASES:
        return EDGE_CASES[name].expected_status, EDGE_CASES[name].error
    case = CASES[name]
    return case.expected_status, None if case.error is None else rf"^(?:{case.error})$"


def _clip(job, name: str) -> pd.Series:
    return job["clips"].loc[job["files"][name]]


def _timeline(job, name: str) -> pd.DataFrame:
    tl = job["timelines"]
    return tl[tl["file"] == job["files"][name]].sort_values([S.TRACK_ID, S.WINDOW_INDEX])


def _windows(job, name: str) -> pd.DataFrame:
    """One row per window: face present on any track, the window's voice columns."""
    tl = _timeline(job, name)
    grouped = tl.groupby(S.WINDOW_INDEX)
    windows = grouped.first()[[S.WINDOW_START_S, S.WINDOW_END_S, S.SPEECH_RATIO]]
    windows[S.FACE_PRESENT] = grouped[S.FACE_PRESENT].any()
    return windows.sort_values(S.WINDOW_START_S)


def test_every_input_ends_in_exactly_one_expected_status(job):
    clips, files = job["clips"], job["files"]
    assert clips.index.is_unique
    assert sorted(clips.index) == sorted(files.values())
    written = pd.read_parquet(job["out"] / "clips")
    assert len(written) == len(files) and written[S.URI].is_unique
    for name, file in files.items():
        row = clips.loc[file]
        status, pattern = _expected(name)
        assert row[S.STATUS] == status, (name, row[S.STATUS], row[S.ERROR])
        if pattern is None:
            assert row[S.ERROR] is None or pd.isna(row[S.ERROR]), (name, row[S.ERROR])
        else:
            assert re.search(pattern, row[S.ERROR] or ""), (name, row[S.ERROR])
            # the same file gets the same message on any machine, in any run
            assert str(job["folder"]) not in row[S.ERROR], (name, row[S.ERROR])
            assert not re.search(r"@ 0x[0-9a-f]+", row[S.ERROR]), (name, row[S.ERROR])


def test_every_non_ok_case_has_a_message_pattern():
    """Every non-ok case of build.CASES says what its message is, and only those: a new
    case gets one."""
    assert {n for n, c in CASES.items() if c.error} == {
        n for n, c in CASES.items() if c.expected_status != "ok"}


def test_no_face_message_counts_the_sampled_frames(job):
    row = _clip(job, "no_face")
    count = int(re.fullmatch(CASES["no_face"].error, row[S.ERROR]).group(1))
    assert count == row[S.FRAMES_SAMPLED] == math.ceil(row[S.DURATION_S] * SAMPLE_FPS - 1e-9)


def test_timelines_read_together_and_only_for_usable_clips(job):
    out, clips, tl = job["out"], job["clips"], job["timelines"]
    assert pq.read_schema(next((out / "timelines").glob("*.parquet"))) == S.TIMELINE_SCHEMA
    usable = set(clips.index[clips[S.STATUS].isin(WITH_TIMELINE)])
    assert set(tl["file"]) == usable
    assert not tl.duplicated([S.CLIP_ID, S.TRACK_ID, S.WINDOW_INDEX]).any()
    for file in set(clips.index) - usable:
        assert not (out / "timelines" / f"{clips.loc[file, S.CLIP_ID]}.parquet").exists()


def _expected_windows(duration_s: float) -> int:
    """Windows start every hop from 0 up to the last sampled frame (the timeline's rule)."""
    last_frame_s = (math.ceil(duration_s * SAMPLE_FPS - 1e-9) - 1) / SAMPLE_FPS
    return math.floor(last_frame_s / HOP_S + 1e-9) + 1


def test_complete_clips_have_every_window_of_their_duration(job):
    clips = job["clips"]
    for file, row in clips[clips[S.STATUS].isin({"ok", "no_face", "no_audio"})].iterrows():
        expected = _expected_windows(row[S.DURATION_S])
        assert row[S.WINDOWS] == expected, file
        assert row[S.FRAMES_SAMPLED] == math.ceil(row[S.DURATION_S] * SAMPLE_FPS - 1e-9), file
        tl = job["timelines"][job["timelines"]["file"] == file]
        assert tl[S.WINDOW_INDEX].nunique() == expected, file
        assert tl[S.WINDOW_END_S].max() == pytest.approx(row[S.DURATION_S]), file


@pytest.mark.parametrize("name", [n for n, c in EDGE_CASES.items() if c.size is not None])
def test_media_facts_are_as_displayed(job, name):
    case, row = EDGE_CASES[name], _clip(job, name)
    assert (row[S.WIDTH], row[S.HEIGHT]) == case.size
    assert row[S.ROTATION] == case.rotation
    assert row[S.DURATION_S] == pytest.approx(case.duration_s, abs=0.2)
    if case.container:
        assert case.container in row[S.CONTAINER].split(",")
        assert row[S.VIDEO_CODEC] == case.video_codec


@pytest.mark.parametrize("name", [n for n, c in EDGE_CASES.items()
                                  if c.expected_status == "ok"])
def test_participant_found_in_readable_recordings(job, name):
    """The face is seen in (nearly) every window where the recording shows it."""
    case, row = EDGE_CASES[name], _clip(job, name)
    assert row[S.FACE_TRACKS] >= 1 and row[S.DOMINANT_EMOTION] is not None
    windows = _windows(job, name)
    inside = np.zeros(len(windows), bool)
    for start, end in case.face_intervals:
        # + 0.1 s: the last window ends with the file, which encoders pad a little
        inside |= (windows[S.WINDOW_START_S] >= start) & (windows[S.WINDOW_END_S] <= end + 0.1)
    assert inside.any() and windows[S.FACE_PRESENT][inside].mean() >= 0.9, name
    boxes = np.stack(_timeline(job, name)[S.BOX].dropna().to_numpy())
    assert boxes.min() >= -20 and boxes.max() <= WORKING_MAX_SIDE + 20, name  # working size


def _pip_inset() -> tuple[int, int, int, int]:
    """The webcam inset of ``pip_webcam.mp4`` with its white frame, (x1, y1, x2, y2) in the
    recording's pixels (x2, y2 exclusive): where the generator's picture differs from the bare
    screen (same cursor) it pastes the inset on, so the test follows the generator."""
    spec = CASES["pip_webcam"]
    picture = np.asarray(sample_build._scene("pip_webcam", spec, spec.size)(0.0))
    screen = np.asarray(sample_build._with_cursor(sample_build._screen(spec.size), 0.0))
    ys, xs = np.nonzero((picture != screen).any(axis=2))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_pip_inset_is_where_the_generator_says():
    """Guards _pip_inset: one webcam-sized region (the tile plus a frame of a few px) in the
    bottom-right quarter, not the whole picture or a stray cursor."""
    x1, y1, x2, y2 = _pip_inset()
    tile_w, tile_h = sample_build._PIP_TILE
    width, height = CASES["pip_webcam"].size
    assert tile_w <= x2 - x1 <= tile_w + 8 and tile_h <= y2 - y1 <= tile_h + 8
    assert x1 > width / 2 and y1 > height / 2 and x2 <= width and y2 <= height


def test_picture_in_picture_face_is_found_inside_the_webcam_inset(job):
    """The participant is seen in (nearly) every sampled frame, and every box the job wrote
    lies inside the inset, scaled to the working size the decoder gives 1280×720."""
    row = _clip(job, "pip_webcam")
    assert row[S.STATUS] == "ok"
    assert row[S.FACE_COVERAGE] >= 0.9, row[S.FACE_COVERAGE]
    width, height = CASES["pip_webcam"].size
    assert (row[S.WIDTH], row[S.HEIGHT]) == (width, height)
    work_w, work_h = working_size(width, height, job["config"].decode.max_side)
    x1, y1, x2, y2 = _pip_inset()
    inset = np.array([x1 * work_w / width, y1 * work_h / height,
                      x2 * work_w / width, y2 * work_h / height])
    tl = _timeline(job, "pip_webcam")
    boxes = np.stack(tl[S.BOX].dropna().to_numpy())
    assert len(boxes) >= 0.9 * row[S.WINDOWS]
    assert (boxes[:, 0] >= inset[0]).all() and (boxes[:, 1] >= inset[1]).all(), (boxes, inset)
    assert (boxes[:, 2] <= inset[2]).all() and (boxes[:, 3] <= inset[3]).all(), (boxes, inset)


def test_portrait_is_turned_upright_before_detection(job):
    """Proves the rotation is applied: the stored picture, as decoded without the display
    matrix, shows no face the job's detector finds; the job finds it, in portrait boxes."""
    path = job["folder"] / EDGE_CASES["portrait_rotated"].file
    detector = FaceDetector(FaceDetectorConfig()).ready()
    stored = _ffmpeg_frames(path, (640, 480), autorotate=False)
    shown = _ffmpeg_frames(path, (480, 640), autorotate=True)
    assert len(detector.process_chunk(stored)[S.FACE_FRAME]) == 0
    assert len(detector.process_chunk(shown)[S.FACE_FRAME]) == len(shown)

    row = _clip(job, "portrait_rotated")
    assert (row[S.WIDTH], row[S.HEIGHT], row[S.ROTATION]) == (480, 640, 90)
    assert row[S.FACE_COVERAGE] > 0.9
    boxes = np.stack(_timeline(job, "portrait_rotated")[S.BOX].dropna().to_numpy())
    assert boxes[:, 2].max() <= 480 + 10 and boxes[:, 3].max() <= 640 + 10
    # an upright face is taller than wide; a sideways one would be wider than tall
    assert np.median((boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0])) > 1.0


def _ffmpeg_frames(path: Path, size: tuple[int, int], *, autorotate: bool) -> np.ndarray:
    """RGB frames at 2 fps from ffmpeg (not the job's decoder), displayed or as stored."""
    cmd = ["ffmpeg", "-v", "error", *([] if autorotate else ["-noautorotate"]), "-i", str(path),
           "-vf", "fps=2", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size[1], size[0], 3)


def test_variable_frame_rate_is_sampled_on_real_timestamps(job):
    path = job["folder"] / EDGE_CASES["vfr"].file
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "packet=pts_time", "-of", "json", str(path)],
                           capture_output=True, check=True, text=True)
    pts = np.sort([float(p["pts_time"]) for p in json.loads(probe.stdout)["packets"]])
    intervals = set(np.round(np.diff(pts), 3))
    assert {round(1 / fps, 3) for *_, fps, _ in VFR_SEGMENTS} <= intervals

    row = _clip(job, "vfr")
    assert row[S.FRAMES_SAMPLED] == pytest.approx(row[S.DURATION_S] * SAMPLE_FPS, abs=1)
    windows = _windows(job, "vfr")
    assert windows[S.WINDOW_START_S].iloc[0] == 0
    assert windows[S.WINDOW_END_S].iloc[-1] == pytest.approx(row[S.DURATION_S])
    # Sampling by frame index at the average rate would put faces into the covered segment
    # (its frames are few) and grey frames after it; real timestamps keep them apart.
    for start, end, _, covered in VFR_SEGMENTS:
        within = (windows[S.WINDOW_START_S] >= start) & (windows[S.WINDOW_END_S] <= end)
        assert within.sum() >= 2
        assert (windows[S.FACE_PRESENT][within] == (not covered)).all(), (start, end)


def test_4k_is_decoded_at_working_size(job):
    row = _clip(job, "uhd_4k")
    assert (row[S.WIDTH], row[S.HEIGHT]) == (3840, 2160)
    assert row[S.FACE_COVERAGE] > 0.9
    boxes = np.stack(_timeline(job, "uhd_4k")[S.BOX].dropna().to_numpy())
    assert boxes[:, [0, 2]].max() <= 640 + 10 and boxes[:, [1, 3]].max() <= 360 + 10


def test_1x1_picture_is_no_face_and_its_voice_is_kept(job):
    row = _clip(job, "tiny_1x1")
    assert row[S.FACE_TRACKS] == 0 and row[S.FACE_COVERAGE] == 0
    assert row[S.FRAMES_SAMPLED] > 0 and bool(row[S.HAS_AUDIO])
    tl = _timeline(job, "tiny_1x1")
    assert len(tl) == row[S.WINDOWS] > 0
    assert tl[S.TRACK_ID].isna().all() and not tl[S.FACE_PRESENT].any()
    assert tl[S.SPEECH_RATIO].notna().all() and tl[S.SPEECH_PRESENT].any()


def test_half_second_clip_has_one_window_with_the_face(job):
    """0.5 s (0.52 s with encoder padding), sampled at 0, 0.2, 0.4 s: one window, to the end;
    no window [0.5, 0.52] s without a picture."""
    row = _clip(job, "short")
    assert row[S.FRAMES_SAMPLED] == 3 and row[S.WINDOWS] == 1
    windows = _windows(job, "short")
    assert windows[S.WINDOW_START_S].tolist() == [0.0]
    assert windows[S.WINDOW_END_S].iloc[0] == pytest.approx(row[S.DURATION_S])
    assert windows[S.FACE_PRESENT].iloc[0] and windows[S.SPEECH_RATIO].notna().all()


def test_non_ascii_name_keeps_its_uri(job):
    row = _clip(job, "non_ascii_name")
    assert row[S.URI].endswith("/Sitzung Jürgen 2.mp4")
    assert (_timeline(job, "non_ascii_name")[S.URI] == row[S.URI]).all()


def test_damaged_middle_keeps_the_windows_before_the_damage(job):
    case, row = EDGE_CASES["corrupt_middle"], _clip(job, "corrupt_middle")
    damage = CORRUPT_SPAN_S[0]
    stopped = float(re.search(case.error, row[S.ERROR]).group(1))
    # a decoder with frame threads reads ahead: the fault can surface a sample or two early
    assert damage - 0.4 - 1e-9 <= stopped <= damage
    assert row[S.DURATION_S] == pytest.approx(case.duration_s, abs=0.1)  # the whole file
    assert row[S.FRAMES_SAMPLED] == round(stopped * SAMPLE_FPS)
    windows = _windows(job, "corrupt_middle")
    np.testing.assert_allclose(windows[S.WINDOW_START_S], np.arange(0, stopped, HOP_S))
    assert windows[S.WINDOW_END_S].max() == pytest.approx(stopped)
    sampled = windows[S.WINDOW_END_S] - windows[S.WINDOW_START_S] >= 1 / SAMPLE_FPS
    assert windows[S.FACE_PRESENT][sampled].all()
    assert windows[S.SPEECH_RATIO].notna().all()


def test_damaged_audio_keeps_the_voice_before_and_after_the_damage(job):
    case, row = EDGE_CASES["corrupt_audio_middle"], _clip(job, "corrupt_audio_middle")
    damaged, resumed = (float(t) for t in re.search(case.error, row[S.ERROR]).groups())
    # ffmpeg stops at the first damaged packet; decoding resumes within ~0.1 s of its end
    assert damaged == pytest.approx(CORRUPT_AUDIO_SPAN_S[0], abs=0.1)
    assert CORRUPT_AUDIO_SPAN_S[1] - 0.05 <= resumed <= CORRUPT_AUDIO_SPAN_S[1] + 0.2
    assert bool(row[S.HAS_AUDIO]) and row[S.DURATION_S] == pytest.approx(case.duration_s, abs=0.1)
    assert row[S.WINDOWS] == _expected_windows(row[S.DURATION_S])
    windows = _windows(job, "corrupt_audio_middle")
    assert len(windows) == row[S.WINDOWS] and windows[S.FACE_PRESENT].all()
    # no window lies wholly inside the 0.6 s gap: each has voice features from its good part
    assert windows[S.SPEECH_RATIO].notna().all()
    speech = windows[S.SPEECH_RATIO] >= 0.15
    for start, end in recording_speech_intervals(case.duration_s):  # before and after
        within = (windows[S.WINDOW_START_S] >= start) & (windows[S.WINDOW_END_S] <= end)
        assert within.sum() >= 3 and speech[within].mean() >= 0.8, (start, end)
    pause = (windows[S.WINDOW_START_S] >= 4.0) & (windows[S.WINDOW_END_S] <= 7.0)
    assert not speech[pause].any()  # the damage reads as nothing, not as speech
