"""Real test media for the audio operators, synthesised on the fly (no files in the repo).

Speech comes from espeak-ng (a GPL-3.0 program; the audio it synthesises is not covered by its
licence), noise and containers from ffmpeg's lavfi sources.  Everything is deterministic:
espeak-ng and ffmpeg's ``anoisesrc`` (fixed seed) produce the same samples on every run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

SENTENCE = "The checkout button was hard to find, I expected it on the top right of the page."
NOISE_AMPLITUDE = 0.0017
"""Peak of the uniform white noise under the speech: RMS 0.0017 / sqrt(3) ≈ -60 dBFS."""


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def espeak(path: Path, text: str = SENTENCE, pitch: int = 50) -> Path:
    """Synthesise ``text`` with espeak-ng's en-us voice (``-p``: 0-99, default 50) to a WAV."""
    _run(["espeak-ng", "-v", "en-us", "-p", str(pitch), "-w", str(path), text])
    return path


def mux_speech_mp4(speech_wav: Path, out: Path, start_s: float, duration_s: float) -> Path:
    """H.264 + AAC mp4: faint noise for ``duration_s``, the WAV's speech mixed in at start_s."""
    delay_ms = round(start_s * 1000)
    _run(
        [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i",
            f"anoisesrc=color=white:amplitude={NOISE_AMPLITUDE}:r=16000:d={duration_s}:seed=7",
            "-i", str(speech_wav),
            "-f", "lavfi", "-i", f"color=c=gray:s=64x48:r=10:d={duration_s}",
            "-filter_complex",
            f"[1:a]aresample=16000,adelay={delay_ms}:all=1,apad[sp];"
            "[sp][0:a]amix=inputs=2:duration=shortest:normalize=0[a]",
            "-map", "[a]", "-map", "2:v",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "96k",
            "-movflags", "+faststart",
            str(out),
        ]
    )  # fmt: skip
    return out


@dataclass(frozen=True)
class SpeechClip:
    """A muxed test clip and where its speech lies (clip seconds)."""

    path: Path
    duration_s: float
    speech_start_s: float
    speech_end_s: float


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
