"""Decoder: chunking, sampling, audio spans and failure rows, on real fixture media."""

from __future__ import annotations

import numpy as np
import pytest

from operators import schema as S
from operators.audio.extract_audio import SAMPLE_RATE
from operators.io.decode_frames import DecodeConfig, make_decode_fn, sample_indices, working_size
from operators.io.probe_media import make_probe_fn


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
    return make_probe_fn()(row)


def test_working_size_downscales_only():
    assert working_size(1920, 1080, 640) == (640, 360)
    assert working_size(320, 240, 640) == (320, 240)


def test_sample_indices_follow_real_timestamps():
    # variable frame rate: frames at 0, 0.1, 0.5, 0.55, 1.0 s
    starts = np.array([0.0, 0.1, 0.5, 0.55, 1.0])
    assert sample_indices(starts, np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])).tolist() == [
        0,
        1,
        1,
        3,
        3,
        4,
    ]


def test_config_rejects_chunks_off_the_hop_grid():
    with pytest.raises(ValueError, match="multiple of hop_s"):
        DecodeConfig(chunk_s=1.25, hop_s=0.5)


def test_decode_chunks_frames_and_audio(media):
    config = DecodeConfig(chunk_s=2.0, sample_fps=5)
    row = _clip_row(media["face_speech"])
    chunks = list(make_decode_fn(config)(row))
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
    chunks = list(make_decode_fn(DecodeConfig())(_clip_row(media["no_audio"])))
    assert all(len(c[S.AUDIO]) == 0 for c in chunks)
    assert sum(len(c[S.FRAME_TS]) for c in chunks) > 0


def test_failed_clip_becomes_one_status_row(media):
    row = _clip_row(media["corrupt"])
    chunks = list(make_decode_fn(DecodeConfig())(row))
    assert len(chunks) == 1
    assert chunks[0][S.STATUS] == S.Status.DECODE_ERROR.value
    assert len(chunks[0][S.FRAME_TS]) == 0 and len(chunks[0][S.AUDIO]) == 0
