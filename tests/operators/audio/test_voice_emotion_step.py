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
    # columns are EMOTIONS: the same as the model's own output for an intact window (given
    # the row's speaker statistics, where the model is speaker-normalised)
    grid = np.stack([np.pad(damaged[i * SAMPLE_RATE // 2:][:SAMPLE_RATE],
                            (0, max(0, SAMPLE_RATE - len(damaged[i * SAMPLE_RATE // 2:]))))
                     for i in range(8)])
    stats = voice_emotion.speaker_statistics(step.model, grid[~broken])
    direct = voice_emotion.predict(step.model, speech[None, :SAMPLE_RATE], stats)
    order = [step.model.classes.index(e) for e in S.EMOTIONS]
    np.testing.assert_allclose(probs[0], direct.probs[0, order], atol=1e-5)
    assert np.isnan(np.asarray(out[S.VOICE_FEATURES][0])[1:3]).all()
    assert np.isfinite(np.asarray(out[S.VOICE_VALENCE][0])[~broken]).all()
    # a row without audio: NaN for each of its windows
    assert np.asarray(out[S.VOICE_PROBS][1]).shape == (4, len(S.EMOTIONS))
    assert np.isnan(np.asarray(out[S.VOICE_PROBS][1])).all()


def test_speaker_normalised_model_is_normalised_per_chunk_row(speech, tmp_path):
    """A model whose checkpoint says ``speaker_norm`` gets each chunk row's own speaker
    statistics (over its intact windows): a row's outputs are what the model gives with
    them, and do not depend on the other rows of the batch."""
    model = voice_emotion.build({"channels": [8, 16, 32], "embed_dim": 32, "attention_dim": 16,
                                 "n_mels": 40, "hop_length": 320, "speaker_norm": True}, seed=0)
    voice_emotion.save(model, tmp_path / "norm.pt")
    step = VoiceEmotion(VoiceEmotionConfig(checkpoint=(tmp_path / "norm.pt").read_bytes(),
                                           device="cpu"))
    first = speech[:4 * SAMPLE_RATE].copy()
    first[round(1.2 * SAMPLE_RATE):round(1.4 * SAMPLE_RATE)] = np.nan  # decoder's gap
    second = 0.3 * speech[SAMPLE_RATE:4 * SAMPLE_RATE]  # another chunk, quieter

    def run(rows):
        out = step({S.AUDIO: ragged(rows), S.AUDIO_START_S: np.array([0.0, 4.0])[:len(rows)],
                    S.CHUNK_START_S: np.array([0.0, 4.0])[:len(rows)],
                    S.CHUNK_END_S: np.array([4.0, 7.0])[:len(rows)],
                    S.STAGE_SECONDS: np.zeros(len(rows))})
        return [np.asarray(p) for p in out[S.VOICE_FEATURES]]

    together = run([first, second])
    alone = run([first])
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5, equal_nan=True)
    # The first row: its 8 windows at 0, 0.5, ... 3.5 s (zero-padded at the end), the two
    # holding the gap NaN, the others scored with the statistics of its 6 intact windows.
    grid = np.zeros((8, SAMPLE_RATE), np.float32)
    for i in range(8):
        piece = first[i * SAMPLE_RATE // 2:i * SAMPLE_RATE // 2 + SAMPLE_RATE]
        grid[i, :len(piece)] = piece
    intact = np.isfinite(grid).all(axis=1)
    assert intact.tolist() == [True, False, False, True, True, True, True, True]
    stats = voice_emotion.speaker_statistics(step.model, grid[intact])
    expected = voice_emotion.predict(step.model, grid[intact], stats).features
    np.testing.assert_allclose(together[0][intact], expected, atol=1e-5)
    assert np.isnan(together[0][~intact]).all()
    assert np.isfinite(together[1]).all() and together[1].shape == (6, 32)
