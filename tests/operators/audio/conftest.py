"""Fixtures of the audio operators' tests: real speech media made once per session by the
helpers of ``tests/fixtures/speech.py``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.speech import SpeechClip, espeak, mux_speech_mp4


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio_media")


@pytest.fixture(scope="session")
def speech_wav(media_dir: Path) -> Path:
    return espeak(media_dir / "speech.wav")


@pytest.fixture(scope="session")
def speech_clip(media_dir: Path, speech_wav: Path) -> SpeechClip:
    """8 s webcam-like clip: -60 dBFS noise, espeak-ng speech from 2.0 s (~ 4.7 s long), AAC."""
    speech_s = float(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
             str(speech_wav)],
            check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    start_s, duration_s = 2.0, 8.0
    path = mux_speech_mp4(speech_wav, media_dir / "speech.mp4", start_s, duration_s)
    return SpeechClip(path, duration_s, start_s, start_s + speech_s)


@pytest.fixture(scope="session")
def espeak_wav(media_dir: Path) -> Callable[[int], Path]:
    """Factory: the test sentence spoken at espeak-ng pitch ``-p`` (0-99) as a WAV."""

    def make(pitch: int) -> Path:
        return espeak(media_dir / f"speech_p{pitch}.wav", pitch=pitch)

    return make
