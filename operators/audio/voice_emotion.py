"""Voice emotion: per-window class probabilities, valence/arousal and embeddings from speech."""

from __future__ import annotations

import logging

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models import voice_emotion
from operators import schema as S
from operators.audio.voice_features import hop_grid_starts
from operators.batches import ragged
from operators.resources import StageResources
from operators.schema import SAMPLE_RATE
from operators.step import Step, load_from_bytes
from operators.vision.detect_faces import resolve_device

logger = logging.getLogger(__name__)


class VoiceEmotionConfig(BaseModel):
    """The voice model (checkpoint bytes read on the driver) and the analysis grid."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: bytes
    window_s: float = Field(1.0, gt=0)
    hop_s: float = Field(0.5, gt=0)
    # Windows per forward pass: 1 s windows are 16k samples, so 256 is ~16 MB of audio.
    max_batch: int = Field(256, ge=1)
    device: str = "auto"


class VoiceEmotion(Step):
    """Run the voice model on every analysis window.

    Reads ``AUDIO``, ``AUDIO_START_S``, ``CHUNK_START_S``/``CHUNK_END_S`` (it must run before
    the voice-features step, which drops ``AUDIO``).  Writes, per chunk row, for the windows
    whose start lies in the chunk (the same grid as ``VOICE_WINDOW_START_S``):
    ``VOICE_PROBS`` (n×7, columns in ``EMOTIONS`` order, mapped by class name),
    ``VOICE_VALENCE``, ``VOICE_AROUSAL`` (n,) and ``VOICE_FEATURES``
    (n×D).  Windows are zero-padded to ``window_s`` at the end of the audio; rows without
    audio, and windows holding damaged (NaN) samples, get NaN (missing, never invented).
    A model with ``speaker_norm`` (its checkpoint says so) gets its log-mel normalised **per
    chunk row**: the speaker statistics of the row's intact windows (its speech windows, see
    ``models/voice_emotion/features.py``), as training and evaluation normalise per actor.
    Per chunk, not per clip: a chunk's windows are scored in the same pass that decodes the
    chunk, so statistics of the whole clip would need a second pass over its audio; a chunk
    is several seconds of speech of one session, enough for the statistics.  Older models
    run on plain inputs.
    A task, not an actor, with the decoder's resources so that Ray fuses it into the decode
    task: the model is ~0.4 MB and ~10 ms per chunk on one CPU thread, so an actor of its own
    would only cost a process and a second trip of every chunk's frames through the object
    store; the model loads once per worker process (``setup``), on CPU unless the task
    holds a GPU.  Raises ``ValueError`` for a model lacking one of ``EMOTIONS``.
    """

    name = "VoiceEmotion"
    reads = (S.AUDIO, S.AUDIO_START_S, S.CHUNK_START_S, S.CHUNK_END_S)
    writes = (S.VOICE_PROBS, S.VOICE_VALENCE, S.VOICE_AROUSAL, S.VOICE_FEATURES)

    def __init__(self, config: VoiceEmotionConfig, resources: StageResources | None = None):
        super().__init__(resources)
        self.config = config
        self.window = round(config.window_s * SAMPLE_RATE)

    def setup(self) -> None:
        self.model = load_from_bytes(voice_emotion.load, self.config.checkpoint,
                                     device=resolve_device(self.config.device))
        logger.info("VoiceEmotion model %s on %s", self.model.name, self.model.device)

    @property
    def class_order(self) -> np.ndarray:
        # VOICE_PROBS columns are in EMOTIONS order whatever order the model's head has (the
        # shipped RAVDESS model predicts the 7 EMOTIONS, calm merged into neutral): map by
        # class name, and refuse a model lacking one of them.
        classes = self.model.classes
        missing = [e for e in S.EMOTIONS if e not in classes]
        if missing:
            raise ValueError(f"voice model {self.model.name} predicts {list(classes)}"
                             f", without {missing} of {list(S.EMOTIONS)}")
        return np.asarray([classes.index(e) for e in S.EMOTIONS])

    def _windows(self, audio: np.ndarray, audio_start: float, starts: np.ndarray) -> np.ndarray:
        out = np.zeros((len(starts), self.window), np.float32)
        for i, start in enumerate(starts):
            lo = round((start - audio_start) * SAMPLE_RATE)
            piece = audio[lo:lo + self.window]
            out[i, :len(piece)] = piece
        return out

    def _speaker(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 2, n_mels)``: the row's speaker statistics for each of its n windows, from
        its intact ones (none intact: unused, the windows get NaN)."""
        intact = windows[np.isfinite(windows).all(axis=1)]
        stats = (voice_emotion.speaker_statistics(self.model, intact) if len(intact)
                 else np.zeros((2, self.model.config.n_mels), np.float32))
        return np.broadcast_to(stats, (len(windows), *stats.shape))

    def process(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        grids, windows, speakers = [], [], []
        norm = self.model.config.speaker_norm
        for audio, audio_start, c0, c1 in zip(batch[S.AUDIO], batch[S.AUDIO_START_S],
                                              batch[S.CHUNK_START_S], batch[S.CHUNK_END_S],
                                              strict=True):
            audio = np.asarray(audio, np.float32)
            starts = hop_grid_starts(float(c0), float(c1), self.config.hop_s)
            grids.append((starts, len(audio) > 0))
            if len(audio):
                row = self._windows(audio, float(audio_start), starts)
                windows.append(row)
                if norm:
                    speakers.append(self._speaker(row))
        stacked = np.concatenate(windows) if windows else np.zeros((0, self.window), np.float32)
        # Damaged audio arrives as NaN samples (missing, not silence): the model needs the
        # whole window, so a window holding any gets NaN outputs, like a row without audio.
        intact = np.isfinite(stacked).all(axis=1)
        usable = stacked[intact]
        per_window = np.concatenate(speakers)[intact] if norm and speakers else None
        model, order = self.model, self.class_order
        parts = [voice_emotion.predict(
            model, usable[i:i + self.config.max_batch],
            None if per_window is None else per_window[i:i + self.config.max_batch])
            for i in range(0, len(usable), self.config.max_batch)]
        dim = model.config.embed_dim
        computed = {
            S.VOICE_PROBS: (np.concatenate([p.probs[:, order] for p in parts])
                            if parts else np.zeros((0, len(S.EMOTIONS)), np.float32)),
            S.VOICE_VALENCE: (np.concatenate([p.valence for p in parts]) if parts
                              else np.zeros(0, np.float32)),
            S.VOICE_AROUSAL: (np.concatenate([p.arousal for p in parts]) if parts
                              else np.zeros(0, np.float32)),
            S.VOICE_FEATURES: (np.concatenate([p.features for p in parts]) if parts
                               else np.zeros((0, dim), np.float32)),
        }
        outputs = {}
        for column, values in computed.items():
            outputs[column] = np.full((len(stacked), *values.shape[1:]), np.nan, np.float32)
            outputs[column][intact] = values
        per_row: dict[str, list[np.ndarray]] = {k: [] for k in outputs}
        offset = 0
        for starts, has_audio in grids:
            n = len(starts)
            for column, values in outputs.items():
                if has_audio:
                    per_row[column].append(values[offset:offset + n])
                else:
                    per_row[column].append(np.full((n, *values.shape[1:]), np.nan, np.float32))
            offset += n if has_audio else 0
        for column, values in per_row.items():
            batch[column] = ragged(values)
        return batch
