"""AudioStream on real media: espeak-ng speech muxed into an H.264/AAC mp4 (see
tests/fixtures/speech.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from operators.audio.extract_audio import AudioDecodeError, AudioStream
from operators.schema import SAMPLE_RATE

if TYPE_CHECKING:
    from tests.fixtures.speech import SpeechClip

# AAC works in 1024-sample frames; ffmpeg trims the encoder priming, so a decoded AAC track
# matches its nominal duration to well within one frame.
DURATION_TOLERANCE_S = 1024 / SAMPLE_RATE


def read_all(stream: AudioStream, n_samples: int) -> list[np.ndarray]:
    parts = []
    while (part := stream.read(n_samples)).size:
        parts.append(part)
    return parts


def assert_reaped(pid: int) -> None:
    """The child is gone and was waited for: waitpid finds no such child (no zombie)."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_reads_full_duration_at_16k_in_several_reads(speech_clip: SpeechClip) -> None:
    with AudioStream(speech_clip.path) as stream:
        pid = stream.pid
        parts = read_all(stream, 3 * SAMPLE_RATE)
        assert stream.read(SAMPLE_RATE).size == 0  # stays exhausted
    assert pid is not None
    assert_reaped(pid)
    assert len(parts) == 3  # 3 s + 3 s + the 2 s rest
    assert all(p.dtype == np.float32 and p.ndim == 1 for p in parts)
    assert [p.size for p in parts[:2]] == [3 * SAMPLE_RATE, 3 * SAMPLE_RATE]
    audio = np.concatenate(parts)
    assert audio.size / SAMPLE_RATE == pytest.approx(
        speech_clip.duration_s, abs=DURATION_TOLERANCE_S
    )
    assert np.abs(audio).max() > 0.3  # the speech is there, at espeak-ng's level


def test_start_s_seeks(speech_clip: SpeechClip) -> None:
    with AudioStream(speech_clip.path) as stream:
        full = np.concatenate(read_all(stream, 10 * SAMPLE_RATE))
    with AudioStream(speech_clip.path, start_s=3.0) as stream:
        tail = np.concatenate(read_all(stream, 10 * SAMPLE_RATE))
    assert tail.size == pytest.approx(full.size - 3 * SAMPLE_RATE, abs=1)
    # Input seeking decodes from the previous AAC frame and drops the excess: sample-exact.
    np.testing.assert_allclose(tail, full[3 * SAMPLE_RATE :][: tail.size], atol=1e-4)


def test_garbage_file_raises_decode_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
    with AudioStream(garbage) as stream:
        pid = stream.pid
        with pytest.raises(AudioDecodeError, match="Invalid data") as raised:
            stream.read(SAMPLE_RATE)
        with pytest.raises(AudioDecodeError):  # and on every read after
            stream.read(SAMPLE_RATE)
    assert "garbage.mp4" in str(raised.value)
    assert pid is not None
    assert_reaped(pid)


def test_truncated_file_yields_good_part_then_raises(
    speech_clip: SpeechClip, tmp_path: Path
) -> None:
    # speech.mp4 has its index up front (+faststart), so a cut leaves a readable first part.
    data = speech_clip.path.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    decoded = []
    with (
        pytest.raises(AudioDecodeError, match="exited with code"),
        AudioStream(truncated) as stream,
    ):
        while (part := stream.read(SAMPLE_RATE)).size:
            decoded.append(part)
    n_good = sum(p.size for p in decoded)
    assert 0 < n_good < speech_clip.duration_s * SAMPLE_RATE

    # Without strict, ffmpeg skips the damage and ends "successfully" with less audio.
    with AudioStream(truncated, strict=False) as stream:
        lenient = np.concatenate(read_all(stream, SAMPLE_RATE))
        assert stream.stderr_tail  # the damage is still reported
    assert lenient.size < speech_clip.duration_s * SAMPLE_RATE


@pytest.mark.timeout(30)
def test_chatty_ffmpeg_does_not_deadlock(tmp_path: Path) -> None:
    """A damaged 2-minute AAC track decoded leniently makes ffmpeg write ~ 170 KB of errors,
    far more than a pipe buffer (64 KB): reading stdout must not block on a full stderr."""
    clean = tmp_path / "long.m4a"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
         "sine=f=220:d=120:r=16000", "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart",
         str(clean)],
        check=True,
    )  # fmt: skip
    data = bytearray(clean.read_bytes())
    rng = np.random.default_rng(0)
    # Past the first 20 KB (container header), overwrite 0.5 % of the bytes: enough errors to
    # fill the pipe, few enough to stay under ffmpeg's max_error_rate (it would exit 69).
    for i in rng.integers(20_000, len(data), size=len(data) // 200):
        data[i] = rng.integers(256)
    corrupt = tmp_path / "corrupt.m4a"
    corrupt.write_bytes(bytes(data))
    with AudioStream(corrupt, strict=False) as stream:
        total = sum(part.size for part in read_all(stream, 10 * SAMPLE_RATE))
        tail = stream.stderr_tail.splitlines()
    assert total > 0
    assert 0 < len(tail) <= 20 and "Error" in "\n".join(tail)


def test_file_without_audio_raises(tmp_path: Path) -> None:
    video_only = tmp_path / "no_audio.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
         "color=c=gray:s=64x48:r=10:d=1", "-c:v", "libx264", str(video_only)],
        check=True,
    )  # fmt: skip
    with AudioStream(video_only) as stream, pytest.raises(AudioDecodeError, match="matches no"):
        stream.read(SAMPLE_RATE)


def test_early_exit_kills_and_reaps_ffmpeg(speech_clip: SpeechClip) -> None:
    with pytest.raises(KeyError), AudioStream(speech_clip.path) as stream:
        pid = stream.pid
        assert stream.read(100).size == 100
        raise KeyError("caller fails mid-stream")
    assert pid is not None
    assert_reaped(pid)
    assert stream.pid is None
    with pytest.raises(RuntimeError, match="outside"):
        stream.read(10)


def test_rejects_negative_start() -> None:
    with pytest.raises(ValueError, match="start_s"):
        AudioStream("x.mp4", start_s=-1.0)
