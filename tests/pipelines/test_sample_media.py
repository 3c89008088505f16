"""The generated sample media are what their ground truth (``CASES``, ``cases.json``) says.

Checked with tools independent of the job's operators: ffprobe (``ffmpeg.probe``) for streams
and durations, ffmpeg-decoded 16 kHz PCM for where speech is, facenet-pytorch's MTCNN for where
faces are.  Speech levels are RMS over 10 ms frames; "loud" means above -45 dBFS, the voice
step's speech threshold, while the room noise sits near -60 dBFS.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN

from operators.schema import EMOTIONS, Status
from pipelines.sample_media.__main__ import main
from pipelines.sample_media.build import (
    CASES,
    SCREEN_SIZE,
    MissingToolError,
    make_pip_recording,
    make_sample_media,
    make_webcam_recording,
    recording_speech_intervals,
)

RATE = 16_000
FRAME_S = 0.01
LOUD_DBFS = -45.0
READABLE = [name for name, spec in CASES.items() if spec.duration_s is not None]
WITH_VIDEO = [name for name, spec in CASES.items() if spec.has_video]
WITH_AUDIO = [name for name, spec in CASES.items() if spec.has_audio]


@pytest.fixture(scope="module")
def truth(media) -> dict[str, dict]:
    return json.loads((media["face_speech"].parent / "cases.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    """MTCNN as the job's face step configures it: every face, none under 40 px."""
    return MTCNN(keep_all=True, min_face_size=40, device=torch.device("cpu"))


def _streams(path: Path) -> tuple[list[dict], list[dict], dict]:
    info = ffmpeg.probe(str(path))
    kinds = [s["codec_type"] for s in info["streams"]]
    assert set(kinds) <= {"video", "audio"}, kinds
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    return video, audio, info["format"]


def _levels(path: Path, seconds: float) -> np.ndarray:
    """dBFS of each 10 ms frame of the file's first ``seconds`` of audio (16 kHz mono).

    The AAC decoder pads its last frame with up to ~20 ms of digital silence past the
    recording's end, which the cut leaves out.
    """
    out, _ = (ffmpeg.input(str(path)).output("pipe:", format="f32le", ac=1, ar=RATE)
              .run(capture_stdout=True, capture_stderr=True))
    samples = np.frombuffer(out, np.float32).astype(np.float64)
    step = round(FRAME_S * RATE)
    assert len(samples) / RATE == pytest.approx(seconds, abs=0.05)
    frames = samples[: round(seconds * RATE) // step * step].reshape(-1, step)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12)


def _frames(path: Path, times: list[float], size: tuple[int, int], fps: int = 25) -> np.ndarray:
    """RGB frames shown at ``times``, decoded in one ffmpeg pass."""
    picks = "+".join(f"eq(n\\,{round(t * fps)})" for t in times)
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf", f"select={picks}",
         "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
        capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, size[1], size[0], 3)
    assert len(frames) == len(times)
    return frames


def _faces(detector: MTCNN, frame: np.ndarray) -> np.ndarray:
    """Confident (p ≥ 0.95) face boxes x1, y1, x2, y2, left to right."""
    boxes, scores = detector.detect(frame)
    if boxes is None:
        return np.zeros((0, 4))
    kept = np.asarray(boxes, float)[np.asarray(scores, float) >= 0.95]
    return kept[np.argsort(kept[:, 0])]


def _inside(t: float, intervals) -> bool:
    return any(start <= t < end for start, end in intervals)


# --- the declared ground truth -------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_case_specs_are_coherent(name):
    spec = CASES[name]
    assert spec.file == f"{name}.mp4"
    assert spec.expected_status in {s.value for s in Status}
    assert spec.expected_emotion is None or spec.expected_emotion in EMOTIONS
    assert (spec.faces > 0) == bool(spec.face_intervals) == (spec.expected_emotion is not None)
    assert spec.has_video == (spec.size is not None)
    assert spec.speech_intervals == () or spec.has_audio
    for intervals in (spec.face_intervals, spec.speech_intervals):
        bounds = [t for interval in intervals for t in interval]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
        assert not bounds or (bounds[0] >= 0 and bounds[-1] <= spec.duration_s)
    assert spec.source


def test_cases_json_records_every_case_as_declared(media, truth):
    assert list(media) == list(CASES)
    assert list(truth) == [spec.file for spec in CASES.values()]
    for name, spec in CASES.items():
        record = dict(truth[spec.file])
        assert record.pop("size_bytes") == media[name].stat().st_size
        assert len(record.pop("fingerprint")) == 16
        assert record == json.loads(json.dumps(asdict(spec))), name


# --- streams --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", READABLE)
def test_streams_and_durations_match(media, name):
    spec = CASES[name]
    video, audio, container = _streams(media[name])
    assert float(container["duration"]) == pytest.approx(spec.duration_s, abs=0.05)
    assert [v["codec_name"] for v in video] == (["h264"] if spec.has_video else [])
    assert [a["codec_name"] for a in audio] == (["aac"] if spec.has_audio else [])
    for stream in video:
        assert (stream["width"], stream["height"]) == spec.size
        assert stream["avg_frame_rate"] == "25/1" and stream["pix_fmt"] == "yuv420p"
        assert int(stream["nb_frames"]) == round(spec.duration_s * 25)
    for stream in audio:
        assert int(stream["sample_rate"]) == 48_000 and stream["channels"] == 1
        assert float(stream["duration"]) == pytest.approx(spec.duration_s, abs=0.05)


@pytest.mark.parametrize("name", ["corrupt", "not_a_video", "zero_bytes"])
def test_broken_files_are_unreadable_by_ffprobe(media, name):
    with pytest.raises(ffmpeg.Error):
        ffmpeg.probe(str(media[name]))


def test_broken_files_are_broken_the_declared_way(media):
    corrupt = media["corrupt"].read_bytes()
    assert corrupt[4:8] == b"ftyp" and b"moov" not in corrupt  # a real mp4, index cut off
    assert 0.2 < len(corrupt) / media["face_speech"].stat().st_size < 0.4
    assert media["zero_bytes"].stat().st_size == 0
    text = media["not_a_video"].read_bytes()
    assert not text.isascii()  # UTF-8 proper, not just ASCII
    assert all(line.isprintable() for line in text.decode("utf-8").splitlines())


# --- speech ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", WITH_AUDIO)
def test_speech_is_loud_exactly_where_declared(media, name):
    spec = CASES[name]
    levels = _levels(media[name], spec.duration_s)
    loud = levels > LOUD_DBFS
    near_speech = np.zeros(len(levels), bool)
    for start, end in spec.speech_intervals:
        first, last = round(start / FRAME_S), round(end / FRAME_S)
        span = np.flatnonzero(loud[first:last])
        assert span[0] * FRAME_S <= 0.03, (name, start)  # speech starts with the interval
        assert (last - first - span[-1] - 1) * FRAME_S <= 0.1, (name, end)  # ... fills it
        assert loud[first:last].mean() > 0.6, name  # talking, not a blip
        near_speech[max(0, first - 3):last + 3] = True  # 30 ms for the codec's smearing
    assert not loud[~near_speech].any(), name  # and nowhere else
    noise = levels[~near_speech]
    assert -66 < np.median(noise) < -56, name  # the room noise: faint ...
    assert noise.min() > -90, name  # ... but in every frame, never digital silence


def test_face_silence_has_noise_only(media):
    levels = _levels(media["face_silence"], CASES["face_silence"].duration_s)
    assert levels.max() < LOUD_DBFS and levels.min() > -90


# --- faces ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", WITH_VIDEO)
def test_faces_are_visible_exactly_where_declared(media, detector, name):
    spec = CASES[name]
    # every 0.5 s, but not within 0.1 s of a face appearing or leaving
    edges = [t for interval in spec.face_intervals for t in interval
             if 0 < t < spec.duration_s]
    times = [float(t) for t in np.arange(0.1, spec.duration_s, 0.5).round(2)
             if all(abs(t - edge) > 0.1 for edge in edges)]
    assert len(times) >= 8
    for t, frame in zip(times, _frames(media[name], times, spec.size), strict=True):
        expected = spec.faces if _inside(t, spec.face_intervals) else 0
        assert len(_faces(detector, frame)) == expected, (name, t)


def test_frames_differ_like_a_real_camera(media):
    a, b = _frames(media["face_speech"], [1.0, 1.04], CASES["face_speech"].size)
    assert 0 < np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_face_leaves_between_two_frames(media, detector):
    leaves = CASES["face_then_noface"].face_intervals[-1][1]
    before, after = _frames(media["face_then_noface"], [leaves - 0.04, leaves],
                            CASES["face_then_noface"].size)
    assert len(_faces(detector, before)) == 1 and len(_faces(detector, after)) == 0


def test_two_faces_participant_left_and_larger(media, detector):
    (frame,) = _frames(media["two_faces"], [2.0], CASES["two_faces"].size)
    participant, other = _faces(detector, frame)
    assert participant[2] < other[0]  # side by side, not one face found twice
    tall, small = participant[3] - participant[1], other[3] - other[1]
    assert tall > 1.8 * small
    assert tall == pytest.approx(480 / 3, rel=0.15)  # a webcam close-up


def test_pip_face_sits_in_the_inset_and_survives_the_working_size(media, detector):
    w, h = SCREEN_SIZE
    (frame,) = _frames(media["pip_webcam"], [2.5], SCREEN_SIZE)
    (box,) = _faces(detector, frame)
    assert box[0] > w - 300 and box[1] > h - 230  # in the bottom-right inset
    assert 80 < box[3] - box[1] < 200
    # the job halves 1280×720 to 640×360 before detection; the face must still be found
    half = torch.nn.functional.interpolate(
        torch.from_numpy(frame.copy()).permute(2, 0, 1)[None].float(), size=(h // 2, w // 2),
        mode="bilinear", antialias=True)[0].permute(1, 2, 0).round().byte().numpy()
    assert len(_faces(detector, half)) == 1


# --- building -------------------------------------------------------------------------------

def test_builds_are_reproducible_and_reused(tmp_path):
    first = make_sample_media(tmp_path / "a", ["face_speech"])["face_speech"]
    second = make_sample_media(tmp_path / "b", ["face_speech"])["face_speech"]
    assert first.read_bytes() == second.read_bytes()
    stamp = first.stat().st_mtime_ns
    make_sample_media(tmp_path / "a", ["face_speech", "zero_bytes"])
    assert first.stat().st_mtime_ns == stamp  # up to date: kept
    recorded = json.loads((tmp_path / "a" / "cases.json").read_text(encoding="utf-8"))
    assert list(recorded) == ["face_speech.mp4", "zero_bytes.mp4"]  # a subset adds up
    first.write_bytes(first.read_bytes()[:1000])  # damaged: rebuilt
    make_sample_media(tmp_path / "a", ["face_speech"])
    assert first.read_bytes() == second.read_bytes()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def test_unknown_case_and_missing_tool_are_named(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"nope.*face_speech"):
        make_sample_media(tmp_path, ["nope"])
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg, no espeak-ng
    with pytest.raises(MissingToolError, match="ffmpeg"):
        make_sample_media(tmp_path, ["zero_bytes"])


def test_command_line_writes_the_chosen_cases(tmp_path):
    assert main([str(tmp_path), "--cases", "zero_bytes,not_a_video"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cases.json", "not_a_video.mp4", "zero_bytes.mp4"]
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path), "--cases", "nope"])
    assert exited.value.code == 2


# --- long recordings ------------------------------------------------------------------------

def test_webcam_recording_has_a_face_and_recurring_speech(tmp_path, detector):
    path = make_webcam_recording(tmp_path / "webcam.mp4", 20, speech_every_s=6.0)
    (video,), (audio,), container = _streams(path)
    assert float(container["duration"]) == pytest.approx(20, abs=0.05)
    assert (video["width"], video["height"], video["avg_frame_rate"]) == (640, 480, "25/1")
    assert int(video["nb_frames"]) == 500 and audio["codec_name"] == "aac"
    for frame in _frames(path, [0.5, 10.0, 19.5], (640, 480)):
        assert len(_faces(detector, frame)) == 1
    levels = _levels(path, 20)
    speech = recording_speech_intervals(20, 6.0)
    assert speech == [(1.0, 3.5), (7.0, 9.5), (13.0, 15.5), (19.0, 20)]
    near = np.zeros(len(levels), bool)
    for start, end in speech:
        near[round(start / FRAME_S) - 3:round(end / FRAME_S) + 3] = True
        assert (levels[round(start / FRAME_S):round(end / FRAME_S)] > LOUD_DBFS).mean() > 0.5
    assert (levels[~near] < LOUD_DBFS).all()


def test_pip_recording_puts_the_webcam_in_the_corner(tmp_path, detector):
    path = make_pip_recording(tmp_path / "pip.mp4", 6)
    (video,), (audio,), container = _streams(path)
    assert float(container["duration"]) == pytest.approx(6, abs=0.05)
    assert (video["width"], video["height"]) == SCREEN_SIZE and audio["channels"] == 1
    (frame,) = _frames(path, [2.0], SCREEN_SIZE)
    (box,) = _faces(detector, frame)
    assert box[0] > SCREEN_SIZE[0] - 380 and box[1] > SCREEN_SIZE[1] - 230


def test_recordings_refuse_impossible_requests(tmp_path):
    with pytest.raises(ValueError, match="seconds"):
        make_webcam_recording(tmp_path / "x.mp4", 0)
    with pytest.raises(ValueError, match="speech_every_s"):
        make_webcam_recording(tmp_path / "x.mp4", 10, speech_every_s=2.0)
