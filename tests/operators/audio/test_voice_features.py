"""Voice features on real synthetic speech (tests/fixtures/speech.py) and on exact signals.

Thresholds below were checked against the measured values they guard (espeak-ng 1.51, ffmpeg
5.1 AAC): speech windows of the test sentence have speech ratio 0.26-0.58 (>= 0.36 for windows
fully inside the speech) and a median F0 of ~ 101 Hz at the default ``-p 50``, ~ 154 Hz at
``-p 90``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydantic
import pytest
import torch
import torchaudio

from operators.audio.extract_audio import AudioStream
from operators.audio.voice_features import (
    LOUDNESS_FLOOR_DB,
    VoiceFeatures,
    VoiceFeaturesConfig,
    build_mfcc,
    hop_grid_starts,
    window_voice_features,
)
from operators.schema import (
    AUDIO,
    AUDIO_START_S,
    CHUNK_END_S,
    CHUNK_INDEX,
    CHUNK_START_S,
    CLIP_ID,
    HAS_AUDIO,
    N_MFCC,
    SAMPLE_RATE,
    VOICE_LOUDNESS_DB,
    VOICE_MFCC,
    VOICE_PITCH_HZ,
    VOICE_SPEECH_RATIO,
    VOICE_WINDOW_START_S,
)

if TYPE_CHECKING:
    from tests.fixtures.speech import SpeechClip

CONFIG = VoiceFeaturesConfig()
VOICE_COLUMNS = (
    VOICE_WINDOW_START_S,
    VOICE_SPEECH_RATIO,
    VOICE_PITCH_HZ,
    VOICE_LOUDNESS_DB,
    VOICE_MFCC,
)


def decode(path: Path) -> np.ndarray:
    with AudioStream(path) as stream:
        return stream.read(60 * SAMPLE_RATE)


def sine(freq_hz: float, seconds: float, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def features(audio: np.ndarray, starts: np.ndarray, audio_start_s: float = 0.0) -> dict:
    return window_voice_features(audio, SAMPLE_RATE, audio_start_s, starts, CONFIG)


def test_speech_windows_vs_noise_windows(speech_clip: SpeechClip) -> None:
    audio = decode(speech_clip.path)
    starts = hop_grid_starts(0.0, speech_clip.duration_s, CONFIG.hop_s)
    result = features(audio, starts)
    ends = starts + CONFIG.window_s
    in_speech = (starts >= speech_clip.speech_start_s) & (ends <= speech_clip.speech_end_s)
    in_noise = (ends <= speech_clip.speech_start_s) | (starts >= speech_clip.speech_end_s)
    assert in_speech.sum() >= 6 and in_noise.sum() >= 5
    ratio = result[VOICE_SPEECH_RATIO]
    assert ratio[in_speech].min() > 2 * CONFIG.min_speech_ratio
    assert ratio[in_speech].mean() > 0.4
    assert ratio[in_noise].max() < CONFIG.min_speech_ratio
    # The -60 dBFS noise floor is measured as such, and the speech well above it.
    np.testing.assert_allclose(result[VOICE_LOUDNESS_DB][in_noise], -60.0, atol=2.0)
    assert result[VOICE_LOUDNESS_DB][in_speech].min() > -30.0
    assert np.isnan(result[VOICE_PITCH_HZ][in_noise]).all()
    assert np.isfinite(result[VOICE_MFCC]).all()
    # c0 (overall log energy) separates speech from the noise floor.
    assert result[VOICE_MFCC][in_speech, 0].min() > result[VOICE_MFCC][in_noise, 0].max()


@pytest.mark.parametrize("kind", ["white", "lowpass"])
def test_loud_steady_noise_is_not_speech(kind: str) -> None:
    """-30 dBFS hiss and -30 dBFS rumble (white noise low-passed at 300 Hz) pass the level
    floor by 15 dB; the periodicity test must still reject them."""
    noise = torch.from_numpy(np.random.default_rng(3).standard_normal(3 * SAMPLE_RATE))
    if kind == "lowpass":
        noise = torchaudio.functional.lowpass_biquad(noise.float(), SAMPLE_RATE, 300.0)
    noise = (noise / noise.square().mean().sqrt() * 10 ** (-30 / 20)).float().numpy()
    result = features(noise, np.arange(0.0, 2.01, 0.5))
    np.testing.assert_allclose(result[VOICE_LOUDNESS_DB], -30.0, atol=1.0)
    assert result[VOICE_SPEECH_RATIO].max() < CONFIG.min_speech_ratio


def test_sine_pitch_and_loudness() -> None:
    result = features(sine(220.0, 3.0), np.array([0.0, 0.5, 1.0, 2.0]))
    np.testing.assert_allclose(result[VOICE_PITCH_HZ], 220.0, rtol=0.03)
    # A full-scale sine has RMS 1/sqrt(2): -3.01 dBFS.
    np.testing.assert_allclose(result[VOICE_LOUDNESS_DB], -3.01, atol=0.05)
    np.testing.assert_array_equal(result[VOICE_SPEECH_RATIO], 1.0)


@pytest.mark.parametrize("freq_hz", [65.0, 110.0, 300.0, 390.0])
def test_pitch_across_range_with_harmonics(freq_hz: float) -> None:
    """A harmonic-rich tone (sawtooth-like) tempts octave errors; YIN must find the F0."""
    tone = sum(sine(freq_hz * k, 2.0, 0.3 / k) for k in range(1, 8))
    result = features(tone, np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(result[VOICE_PITCH_HZ], freq_hz, rtol=0.03)


def test_espeak_pitch_is_plausible_and_follows_pitch_flag(
    espeak_wav: Callable[[int], Path],
) -> None:
    medians = {}
    for pitch in (50, 90):
        audio = decode(espeak_wav(pitch))
        result = features(audio, hop_grid_starts(0.0, audio.size / SAMPLE_RATE, CONFIG.hop_s))
        voiced = result[VOICE_PITCH_HZ][np.isfinite(result[VOICE_PITCH_HZ])]
        assert voiced.size >= 5
        assert ((voiced > 70) & (voiced < 300)).all()
        medians[pitch] = np.median(voiced)
    assert medians[90] > 1.2 * medians[50]


def test_windows_past_the_end_and_digital_silence() -> None:
    audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), sine(150.0, 1.0, 0.5)])
    result = features(audio, np.array([0.0, 1.0, 1.5, 1.99, 2.0, 5.0]))
    ratio, pitch = result[VOICE_SPEECH_RATIO], result[VOICE_PITCH_HZ]
    loudness, mfcc = result[VOICE_LOUDNESS_DB], result[VOICE_MFCC]
    # Digital silence: finite floor, no speech, no pitch, finite MFCC.
    assert loudness[0] == LOUDNESS_FLOOR_DB
    assert ratio[0] == 0.0 and np.isnan(pitch[0]) and np.isfinite(mfcc[0]).all()
    # Half a window of tone left: analysed on what is there.
    assert ratio[2] == 1.0 and pitch[2] == pytest.approx(150.0, rel=0.03)
    np.testing.assert_allclose(loudness[1:3], 20 * np.log10(0.5 / np.sqrt(2)), atol=0.05)
    # 10 ms left: too short for a 25 ms frame, still has a level.
    assert ratio[3] == 0.0 and np.isnan(pitch[3]) and np.isnan(mfcc[3]).all()
    assert np.isfinite(loudness[3])
    # No samples at all: speech ratio 0, everything else NaN.
    for i in (4, 5):
        assert ratio[i] == 0.0
        assert np.isnan(pitch[i]) and np.isnan(loudness[i]) and np.isnan(mfcc[i]).all()


def test_non_finite_samples_count_as_missing() -> None:
    audio = sine(200.0, 2.0, 0.5)
    audio[SAMPLE_RATE:] = np.nan
    result = features(audio, np.array([0.0, 1.0]))
    assert np.isfinite(result[VOICE_LOUDNESS_DB][0])
    # a window of damaged audio only is unknown, not silent: no speech ratio either
    assert np.isnan(result[VOICE_SPEECH_RATIO][1]) and np.isnan(result[VOICE_LOUDNESS_DB][1])
    # a damaged stretch inside a window: features from the rest of it
    audio = sine(200.0, 2.0, 0.5)
    audio[SAMPLE_RATE // 2:SAMPLE_RATE] = np.nan
    result = features(audio, np.array([0.0, 1.0]))
    assert result[VOICE_SPEECH_RATIO][0] > 0.5 and np.isfinite(result[VOICE_LOUDNESS_DB][0])


def test_mfcc_is_the_mean_of_torchaudio_mfcc_frames() -> None:
    audio = np.random.default_rng(1).standard_normal(2 * SAMPLE_RATE).astype(np.float32)
    result = features(audio, np.array([0.5]), audio_start_s=0.0)
    window = torch.from_numpy(audio[SAMPLE_RATE // 2 : SAMPLE_RATE // 2 + SAMPLE_RATE])
    expected = build_mfcc(SAMPLE_RATE, CONFIG)(window).mean(dim=-1).numpy()
    assert result[VOICE_MFCC].shape == (1, N_MFCC)
    np.testing.assert_allclose(result[VOICE_MFCC][0], expected, rtol=1e-4, atol=1e-3)


def test_window_does_not_depend_on_the_chunk(speech_clip: SpeechClip) -> None:
    """A window computed from a chunk's audio (with the decoder's tail) equals the same window
    computed from the whole clip, also when the chunk's audio starts later."""
    audio = decode(speech_clip.path)
    starts = np.array([3.5, 4.0])
    whole = features(audio, starts)
    chunk_audio = audio[3 * SAMPLE_RATE : round(4.5 * SAMPLE_RATE) + SAMPLE_RATE // 2]
    chunk = features(chunk_audio, starts, audio_start_s=3.0)
    for name in (VOICE_SPEECH_RATIO, VOICE_PITCH_HZ, VOICE_LOUDNESS_DB, VOICE_MFCC):
        np.testing.assert_array_equal(chunk[name], whole[name])


def test_hop_grid_starts() -> None:
    np.testing.assert_allclose(hop_grid_starts(10.0, 12.0, 0.5), [10.0, 10.5, 11.0, 11.5])
    np.testing.assert_allclose(hop_grid_starts(10.2, 11.6, 0.5), [10.5, 11.0, 11.5])
    np.testing.assert_allclose(hop_grid_starts(0.3, 0.9, 0.1), [0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert hop_grid_starts(float("nan"), 10.0, 0.5).size == 0
    assert hop_grid_starts(5.0, 5.0, 0.5).size == 0


def test_config_is_frozen_and_checked() -> None:
    with pytest.raises(pydantic.ValidationError):
        CONFIG.hop_s = 0.25  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="pitch_min_hz"):
        VoiceFeaturesConfig(pitch_min_hz=500.0)
    with pytest.raises(pydantic.ValidationError):
        VoiceFeaturesConfig(window_size=2.0)  # type: ignore[call-arg]


def _object_column(values: list) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        column[i] = value
    return column


def test_voice_features_step_on_a_chunk_batch() -> None:
    """Row 0: chunk [0, 2) with a 220 Hz tone plus the decoder's 0.5 s tail.  Row 1: chunk
    [2, 3.7) of a clip without audio.  Row 2: audio promised but none delivered.  Row 3: an
    error row without media or bounds."""
    batch = {
        CLIP_ID: np.array(["a", "b", "c", "d"]),
        CHUNK_INDEX: np.array([0, 1, 0, 0]),
        CHUNK_START_S: np.array([0.0, 2.0, 0.0, np.nan]),
        CHUNK_END_S: np.array([2.0, 3.7, 1.0, np.nan]),
        AUDIO_START_S: np.array([0.0, np.nan, 0.0, np.nan]),
        HAS_AUDIO: _object_column([True, False, True, None]),
        AUDIO: _object_column([sine(220.0, 2.5, 0.5), None, np.empty(0, np.float32), None]),
    }
    out = VoiceFeatures(CONFIG)(batch)

    assert AUDIO not in out
    assert set(out) == set(batch) - {AUDIO} | set(VOICE_COLUMNS)
    np.testing.assert_array_equal(out[CLIP_ID], batch[CLIP_ID])
    for name in VOICE_COLUMNS:
        assert out[name].dtype == object and out[name].shape == (4,)

    starts = out[VOICE_WINDOW_START_S]
    np.testing.assert_allclose(starts[0], [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(starts[1], [2.0, 2.5, 3.0, 3.5])
    np.testing.assert_allclose(starts[2], [0.0, 0.5])
    assert starts[3].size == 0
    assert all(s.dtype == np.float64 for s in starts)
    for name in (VOICE_SPEECH_RATIO, VOICE_PITCH_HZ, VOICE_LOUDNESS_DB, VOICE_MFCC):
        assert all(v.dtype == np.float32 for v in out[name])
    assert [m.shape for m in out[VOICE_MFCC]] == [
        (4, N_MFCC),
        (4, N_MFCC),
        (2, N_MFCC),
        (0, N_MFCC),
    ]

    np.testing.assert_allclose(out[VOICE_PITCH_HZ][0], 220.0, rtol=0.03)
    np.testing.assert_array_equal(out[VOICE_SPEECH_RATIO][0], 1.0)
    assert np.isfinite(out[VOICE_MFCC][0]).all()
    # Without audio the features are missing, not silent: NaN speech ratio too.
    for row in (1, 2):
        for name in (VOICE_SPEECH_RATIO, VOICE_PITCH_HZ, VOICE_LOUDNESS_DB, VOICE_MFCC):
            assert np.isnan(out[name][row]).all()


def test_voice_features_step_survives_audio_without_start_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch = {
        CHUNK_START_S: np.array([0.0]),
        CHUNK_END_S: np.array([1.0]),
        AUDIO_START_S: np.array([np.nan]),
        HAS_AUDIO: np.array([True]),
        AUDIO: _object_column([sine(220.0, 1.5)]),
    }
    with caplog.at_level(logging.WARNING):
        out = VoiceFeatures(CONFIG)(batch)
    assert np.isnan(out[VOICE_SPEECH_RATIO][0]).all() and out[VOICE_SPEECH_RATIO][0].size == 2
    assert AUDIO_START_S in caplog.text
    with pytest.raises(ValueError, match="finite"):
        features(sine(220.0, 1.0), np.array([np.nan]))


def test_voice_features_step_accepts_a_2d_audio_column() -> None:
    """Ray hands equal-length list columns over as one 2-D array instead of an object array."""
    batch = {
        CHUNK_START_S: np.array([0.0, 1.0]),
        CHUNK_END_S: np.array([1.0, 2.0]),
        AUDIO_START_S: np.array([0.0, 1.0]),
        HAS_AUDIO: np.array([True, True]),
        AUDIO: np.stack([sine(120.0, 1.5, 0.5), sine(240.0, 1.5, 0.5)]),
    }
    out = VoiceFeatures(CONFIG)(batch)
    np.testing.assert_allclose(out[VOICE_PITCH_HZ][0], 120.0, rtol=0.03)
    np.testing.assert_allclose(out[VOICE_PITCH_HZ][1], 240.0, rtol=0.03)
