"""The voice-emotion step as plain Python: the shipped model on real espeak-ng speech, the
probabilities in EMOTIONS order, and damaged or missing audio as NaN (never a crash)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from models import voice_emotion
from operators import schema as S
from operators.audio.voice_emotion import VoiceEmotion, VoiceEmotionConfig
from operators.batches import ragged
from operators.schema import SAMPLE_RATE


@pytest.fixture(scope="module")
def speech(speech_wav) -> np.ndarray:
    """The espeak-ng sentence as 16 kHz mono float32 samples (ffmpeg resamples)."""
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(speech_wav), "-ac", "1",
         "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.float32).copy()


def test_windows_get_probabilities_and_damaged_or_missing_audio_gets_nan(speech):
    step = VoiceEmotion(VoiceEmotionConfig(
        checkpoint=voice_emotion.DEFAULT_WEIGHTS.read_bytes(), device="cpu"))
    damaged = speech[:4 * SAMPLE_RATE].copy()
    damaged[round(1.2 * SAMPLE_RATE):round(1.4 * SAMPLE_RATE)] = np.nan  # decoder's gap
    batch = {
        S.AUDIO: ragged([damaged, np.zeros(0, np.float32)]),
        S.AUDIO_START_S: np.array([0.0, 4.0]),
        S.CHUNK_START_S: np.array([0.0, 4.0]),
        S.CHUNK_END_S: np.array([4.0, 6.0]),
        S.STAGE_SECONDS: np.array([0.0, 0.0]),
    }
    out = step(batch)
    probs = np.asarray(out[S.VOICE_PROBS][0])
    assert probs.shape == (8, len(S.EMOTIONS))  # windows at 0, 0.5, ... 3.5 s
    # windows [0.5, 1.5) and [1.0, 2.0) hold the damaged stretch [1.2, 1.4) s
    broken = np.isnan(probs).all(axis=1)
    assert broken.tolist() == [False, True, True, False, False, False, False, False]
    np.testing.assert_allclose(probs[~broken].sum(axis=1), 1.0, atol=1e-5)
    # columns are EMOTIONS: the same as the model's own output for an intact window
    direct = voice_emotion.predict(step.model, speech[None, :SAMPLE_RATE])
    order = [step.model.classes.index(e) for e in S.EMOTIONS]
    np.testing.assert_allclose(probs[0], direct.probs[0, order], atol=1e-5)
    assert np.isnan(np.asarray(out[S.VOICE_FEATURES][0])[1:3]).all()
    assert np.isfinite(np.asarray(out[S.VOICE_VALENCE][0])[~broken]).all()
    # a row without audio: NaN for each of its windows
    assert np.asarray(out[S.VOICE_PROBS][1]).shape == (4, len(S.EMOTIONS))
    assert np.isnan(np.asarray(out[S.VOICE_PROBS][1])).all()
