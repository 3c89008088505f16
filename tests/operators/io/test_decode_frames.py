"""Decoder: chunking, sampling, streaming, audio spans and failure rows, on real media."""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path
from typing import ClassVar

import decord
import numpy as np
import psutil
import pytest

from operators import schema as S
from operators.io import decode_frames
from operators.io.decode_frames import (
    DecodeConfig,
    DecodeFrames,
    FrameSampler,
    StreamingFrameSampler,
    open_sampler,
    working_size,
)
from operators.io.probe_media import ProbeMedia
from operators.schema import SAMPLE_RATE
from pipelines.sample_media.build import make_webcam_recording
from pipelines.sample_media.codecs import (
    CODEC_SIZE,
    CodecVariant,
    make_codec_variants,
    transcode,
)
from pipelines.sample_media.edge_cases import (
    CORRUPT_AUDIO_SPAN_S,
    _corrupt_audio_middle,
    _damage_packets,
    _portrait_rotated,
)


def _clip_row(path) -> dict:
    row = {
        S.CLIP_ID: "c",
        S.URI: str(path),
        S.LOCAL_PATH: str(path),
        S.SIZE_BYTES: 1,
        S.STATUS: "",
        S.ERROR: "",
        S.STAGE_SECONDS: 0.0,
    }
    return ProbeMedia()(row)


def test_working_size_downscales_only():
    assert working_size(1920, 1080, 640) == (640, 360)
    assert working_size(320, 240, 640) == (320, 240)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def _vfr_greys(path: Path, starts: list[float]) -> Path:
    """A lossless video whose frame i starts at starts[i] and is uniformly grey 20 + 40 i
    (ffmpeg's concat demuxer gives each still picture its duration)."""
    lines = []
    for i, start in enumerate(starts):
        picture = path.parent / f"grey{i}.ppm"
        picture.write_bytes(b"P6 64 48 255\n" + bytes([20 + 40 * i]) * (64 * 48 * 3))
        lines.append(f"file '{picture.name}'")
        if i + 1 < len(starts):
            lines.append(f"duration {starts[i + 1] - start}")
    lines.append(f"file '{picture.name}'")  # the concat demuxer drops the last duration
    listing = path.parent / "greys.txt"
    listing.write_text("\n".join(lines) + "\n")
    _ffmpeg("-f", "concat", "-i", str(listing), "-fps_mode", "vfr", "-c:v", "ffv1",
            "-pix_fmt", "yuv420p", str(path))
    return path


def test_sampler_takes_the_frame_on_screen_at_each_time(tmp_path):
    # variable frame rate: frames at 0, 0.1, 0.5, 0.55, 1.0 s
    path = _vfr_greys(tmp_path / "vfr.mkv", [0.0, 0.1, 0.5, 0.55, 1.0])
    with FrameSampler(path, 64, 48) as sampler:
        first = sampler.take(np.array([0.0, 0.2, 0.4]))
        rest = sampler.take(np.array([0.6, 0.8, 1.0, 1.2]))  # 1.2: after the last frame
    assert first.shape == (3, 48, 64, 3) and rest.shape == (4, 48, 64, 3)
    grey = np.concatenate([first, rest]).reshape(7, -1).mean(axis=1)
    assert np.round((grey - 20) / 40).tolist() == [0, 1, 1, 3, 3, 4, 4]


def test_sampler_frames_are_upright_once(tmp_path):
    """A phone video stored sideways with a display matrix (the portrait_rotated edge case's
    recipe): decord turns it itself and the sampler must not turn it again; the reference
    is ffmpeg's own upright decoding at the same size."""
    base, rotated = tmp_path / "base.mp4", tmp_path / "rotated.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x480:rate=5", "-t", "1", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", str(base))
    _portrait_rotated(base, rotated, tmp_path)
    upright = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(rotated), "-frames:v", "1",
         "-vf", "scale=240:320", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True).stdout
    want = np.frombuffer(upright, np.uint8).reshape(320, 240, 3)  # displayed: portrait
    with FrameSampler(rotated, 240, 320) as sampler:
        got = sampler.take(np.array([0.0]))[0]
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).mean() < 10  # scaler rounding only


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> Path:
    return make_webcam_recording(tmp_path_factory.mktemp("long") / "long.mp4", 40.0)


def _ffmpeg_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children()
            if p.name() == "ffmpeg" and p.status() != psutil.STATUS_ZOMBIE]


def test_decoder_streams_a_long_recording_chunk_by_chunk(long_recording):
    """Chunks come out one at a time: the first while the audio pipe is still open (not
    drained into memory), and the pipe is closed when the last one is out."""
    chunks = DecodeFrames(DecodeConfig(chunk_s=2.0))(_clip_row(long_recording))
    first = next(chunks)
    assert first[S.CHUNK_INDEX] == 0 and len(first[S.FRAMES]) == 10
    audio = _ffmpeg_children()
    assert len(audio) == 1 and str(long_recording) in " ".join(audio[0].cmdline())
    assert len(first[S.AUDIO]) == pytest.approx(2.5 * SAMPLE_RATE, abs=2)

    rest = list(chunks)
    assert [c[S.CHUNK_INDEX] for c in rest] == list(range(1, 20))
    assert all(len(c[S.FRAMES]) == 10 and len(c[S.AUDIO]) > 0 for c in rest)
    assert not _ffmpeg_children()


class _SeekSpy(decord.VideoReader):
    """decord's reader, recording the frames it is asked for and where it is seeked."""

    calls: ClassVar[list[tuple[str, list[int]]]] = []

    def get_batch(self, indices):
        _SeekSpy.calls.append(("batch", [int(i) for i in indices]))
        return super().get_batch(indices)

    def seek(self, pos):
        _SeekSpy.calls.append(("seek", [int(pos)]))
        return super().seek(pos)


def test_decoder_stops_decord_after_each_chunk(long_recording, monkeypatch):
    """The memory bound: decord decodes ahead of a reader that has stopped asking (dmlc/decord
    #157), so every chunk's frames are followed by a seek back to the first frame, the one
    seek that always stops decord's decoder thread and drops what it read ahead."""
    monkeypatch.setattr(_SeekSpy, "calls", [])
    monkeypatch.setattr(decode_frames.decord, "VideoReader", _SeekSpy)
    chunks = list(DecodeFrames(DecodeConfig(chunk_s=4.0))(_clip_row(long_recording)))
    assert len(chunks) == 10 and all(not c[S.STATUS] for c in chunks)
    assert [kind for kind, _ in _SeekSpy.calls] == ["batch", "seek"] * 10
    assert all(at == [0] for kind, at in _SeekSpy.calls if kind == "seek")
    assert [at[0] for kind, at in _SeekSpy.calls if kind == "batch"] == [
        100 * k for k in range(10)]  # 4 s of 25 fps, from the start of each chunk


def test_frames_after_the_seeks_are_the_right_ones(tmp_path):
    """Keyframes off the chunk grid, B-frames and a moving picture: every chunk's frames equal
    one unseeked decord pass over the same indices (decord's fast seek to the next chunk's
    first frame, when that is not a keyframe, returned the wrong frames afterwards)."""
    path = tmp_path / "gop37.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "12", "-c:v",
            "libx264", "-g", "37", "-bf", "3", "-pix_fmt", "yuv420p", str(path))
    grid = [np.arange(k * 10, min(60, k * 10 + 10)) / 5.0 for k in range(6)]  # 2 s at 5 fps
    with FrameSampler(path, 320, 240) as sampler:
        got = [sampler.take(times) for times in grid]
    reference = decord.VideoReader(str(path), width=320, height=240, num_threads=1)
    starts = reference.get_frame_timestamp(np.arange(len(reference)))[:, 0]
    indices = np.searchsorted(starts, np.concatenate(grid) + 1e-6, side="right") - 1
    want = reference.get_batch(indices).asnumpy()
    np.testing.assert_array_equal(np.concatenate(got), want)


def test_recording_with_one_keyframe_is_decoded_in_one_pass(tmp_path):
    """A browser-style recording (one keyframe at the start): stopping decord after each
    chunk would re-decode the file from its start for every chunk (quadratic), so PyAV's
    sequential pass takes over, with the same frames as one unseeked decord pass."""
    path = tmp_path / "one_keyframe.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "20", "-c:v",
            "libx264", "-g", "100000", "-pix_fmt", "yuv420p", str(path))
    row = _clip_row(path)
    config = DecodeConfig(chunk_s=4.0)
    with contextlib.ExitStack() as stack:
        sampler = open_sampler(path, 320, 240, row, config, stack)
        assert isinstance(sampler, StreamingFrameSampler)
    with contextlib.ExitStack() as stack:  # keyframes every 2 s stay on decord
        dense = tmp_path / "dense.mp4"
        _ffmpeg("-i", str(path), "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p",
                str(dense))
        assert isinstance(open_sampler(dense, 320, 240, _clip_row(dense), config, stack),
                          FrameSampler)

    chunks = list(DecodeFrames(config)(row))
    assert len(chunks) == 5 and all(not c[S.STATUS] for c in chunks)
    got = np.concatenate([c[S.FRAMES] for c in chunks])
    times = np.concatenate([c[S.FRAME_TS] for c in chunks])
    reference = decord.VideoReader(str(path), width=320, height=240, num_threads=1)
    starts = reference.get_frame_timestamp(np.arange(len(reference)))[:, 0]
    want = reference.get_batch(
        np.searchsorted(starts, times + 1e-6, side="right") - 1).asnumpy()
    assert got.shape == want.shape == (100, 240, 320, 3)
    assert np.abs(got.astype(int) - want).mean() < 1.0  # the same frames, scaler rounding


def test_config_rejects_chunks_off_the_hop_grid():
    with pytest.raises(ValueError, match="multiple of hop_s"):
        DecodeConfig(chunk_s=1.25, hop_s=0.5)


def test_decode_chunks_frames_and_audio(media):
    config = DecodeConfig(chunk_s=2.0, sample_fps=5)
    row = _clip_row(media["face_speech"])
    chunks = list(DecodeFrames(config)(row))
    duration = row[S.DURATION_S]
    assert len(chunks) == int(np.ceil(duration / 2.0))
    ts = np.concatenate([c[S.FRAME_TS] for c in chunks])
    np.testing.assert_allclose(ts, np.arange(len(ts)) / 5.0)
    assert len(ts) == int(np.ceil(duration * 5 - 1e-9))
    first = chunks[0]
    assert first[S.FRAMES].shape == (10, 480, 640, 3) and first[S.FRAMES].dtype == np.uint8
    assert first[S.FRAMES].mean() > 20  # a real picture, not black frames
    # audio covers the chunk plus window_s - hop_s for the last windows
    assert len(first[S.AUDIO]) == pytest.approx(2.5 * SAMPLE_RATE, abs=2)
    assert all(not c[S.STATUS] for c in chunks)
    assert S.LOCAL_PATH not in first


def test_decode_without_audio_stream(media):
    chunks = list(DecodeFrames(DecodeConfig())(_clip_row(media["no_audio"])))
    assert all(len(c[S.AUDIO]) == 0 for c in chunks)
    assert sum(len(c[S.FRAME_TS]) for c in chunks) > 0


def test_failed_clip_becomes_one_status_row(media):
    row = _clip_row(media["corrupt"])
    chunks = list(DecodeFrames(DecodeConfig())(row))
    assert len(chunks) == 1
    assert chunks[0][S.STATUS] == S.Status.DECODE_ERROR.value
    assert len(chunks[0][S.FRAME_TS]) == 0 and len(chunks[0][S.AUDIO]) == 0
    assert chunks[0][S.VIDEO_DECODER] == ""  # no decoder read a frame


def test_damaged_audio_becomes_a_gap_and_decoding_resumes_after_it(long_recording, tmp_path):
    damaged = tmp_path / "damaged_audio.mp4"
    _corrupt_audio_middle(long_recording, damaged, tmp_path)
    config = DecodeConfig(chunk_s=4.0)
    chunks = list(DecodeFrames(config)(_clip_row(damaged)))
    clean = list(DecodeFrames(config)(_clip_row(long_recording)))
    assert len(chunks) == len(clean) == 10
    hit = chunks[1]  # 4-8 s (+0.5 s overlap) holds the damage at 6.0-6.6 s
    assert hit[S.STATUS] == S.Status.PARTIAL.value and bool(hit[S.HAS_AUDIO])
    match = re.fullmatch(r"audio damaged at (6\.\d)-(6\.\d)s \((.+)\): voice columns null there",
                         hit[S.ERROR])
    assert match and "0x" not in match.group(3) and str(tmp_path) not in hit[S.ERROR]
    gap = np.flatnonzero(np.isnan(hit[S.AUDIO])) / SAMPLE_RATE + hit[S.AUDIO_START_S]
    assert gap.min() == pytest.approx(CORRUPT_AUDIO_SPAN_S[0], abs=0.05)
    assert CORRUPT_AUDIO_SPAN_S[1] <= gap.max() <= CORRUPT_AUDIO_SPAN_S[1] + 0.15
    assert len(gap) == round((gap.max() - gap.min()) * SAMPLE_RATE) + 1  # one stretch
    # The good audio around the damage is the clean file's, in place (not shifted by the
    # gap): the same samples before it; after it, the same up to the AAC decoder's fresh
    # start (its noise substitution draws different noise), correlation ~0.99995.
    for got, want in zip(chunks, clean, strict=True):
        assert len(got[S.AUDIO]) == len(want[S.AUDIO])
        ok = np.isfinite(got[S.AUDIO])
        assert ok.all() or got is hit
        assert np.corrcoef(got[S.AUDIO][ok], want[S.AUDIO][ok])[0, 1] > 0.999
    before = round((gap.min() - hit[S.AUDIO_START_S]) * SAMPLE_RATE)
    np.testing.assert_array_equal(hit[S.AUDIO][:before], clean[1][S.AUDIO][:before])
    assert all(not c[S.STATUS] for c in chunks if c is not hit)
    assert not _ffmpeg_children()


@pytest.fixture(scope="module")
def av1_variants(tmp_path_factory) -> dict[str, Path]:
    """The H.264 original, its AV1 transcode, and an AV1 one stored sideways with a display
    matrix (what a phone recording re-encoded to AV1 would be)."""
    folder = tmp_path_factory.mktemp("av1")
    files = make_codec_variants(folder, ["h264_mp4", "av1_mp4"])
    rotated = CodecVariant("av1_aac_rotated.mp4", "av1", "aac", "mp4", "pyav", rotation=90)
    files["av1_mp4_rotated"] = folder / rotated.file
    transcode(files["h264_mp4"], files["av1_mp4_rotated"], rotated, folder)
    return files


def _decoded(path: Path) -> tuple[np.ndarray, list[dict]]:
    chunks = list(DecodeFrames(DecodeConfig(chunk_s=2.0))(_clip_row(path)))
    return np.concatenate([c[S.FRAMES] for c in chunks]).astype(int), chunks


@pytest.mark.parametrize("name", ["av1_mp4", "av1_mp4_rotated"])
def test_av1_is_decoded_by_pyav_where_decord_cannot_open_it(av1_variants, name):
    """decord's bundled FFmpeg has no AV1 decoder: it cannot even open the stream (the
    issue's `cannot find video stream with wanted index: -1`).  PyAV's has (libdav1d), so the
    clip is decoded by PyAV, turned upright, with the H.264 original's pictures."""
    path = av1_variants[name]
    with pytest.raises(decord.DECORDError, match="cannot find video stream"):
        decord.VideoReader(str(path))
    width, height = CODEC_SIZE
    with contextlib.ExitStack() as stack:
        sampler = open_sampler(path, width, height, _clip_row(path), DecodeConfig(), stack)
        assert isinstance(sampler, StreamingFrameSampler)
    got, chunks = _decoded(path)
    assert [c[S.STATUS] for c in chunks] == ["", ""]
    assert [c[S.VIDEO_DECODER] for c in chunks] == ["pyav", "pyav"]
    want, original = _decoded(av1_variants["h264_mp4"])
    assert [c[S.VIDEO_DECODER] for c in original] == ["decord", "decord"]
    assert got.shape == want.shape == (20, height, width, 3)
    # AV1's coding loss is ~2 grey levels; the neighbouring sample differs by ~7, a picture
    # turned upside down by ~19.
    assert np.abs(got - want).mean() < 4


def test_a_stream_neither_decoder_reads_is_a_decode_error(av1_variants, tmp_path):
    """The first 0.3 s of video packets overwritten: decord opens the file but its codec
    refuses the first packet, PyAV's refuses it too, so the clip is a decode_error with
    decord's reason, and no decoder is named."""
    damaged = tmp_path / "damaged_start.mp4"
    _damage_packets(av1_variants["h264_mp4"], damaged, "v:0", (0.0, 0.3), seed=7)
    chunks = list(DecodeFrames(DecodeConfig())(_clip_row(damaged)))
    assert len(chunks) == 1
    assert chunks[0][S.STATUS] == S.Status.DECODE_ERROR.value
    assert chunks[0][S.ERROR] == ("video decoding failed at 0.0s: the video codec refused a "
                                  "packet (invalid data)")
    assert chunks[0][S.VIDEO_DECODER] == "" and len(chunks[0][S.FRAMES]) == 0
