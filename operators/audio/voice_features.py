"""Per-window voice features of a chunk's audio: speech ratio, pitch, loudness and mean MFCC.

:class:`VoiceFeatures` is the Ray Data step (its docstring is the column contract);
:func:`window_voice_features` is the pure computation it runs per chunk row.

The features (:func:`window_voice_features`)
--------------------------------------------
Each window ``[start, start + window_s)`` is cut into 25 ms frames every 10 ms.

* **Speech ratio** -- the share of the window's complete frames that a simple VAD calls speech:
  frame RMS level above ``speech_threshold_dbfs`` AND voiced, i.e. periodic with a period in
  ``[1/pitch_max_hz, 1/pitch_min_hz]``: the YIN aperiodicity (minimum of the cumulative-mean-
  normalised difference function) is below ``voicing_threshold``.  Periodicity rather than
  spectral flatness, because the steady noise of a recording room (fans, HVAC, hiss) is
  coloured, hence not flat, but it is not periodic.  Unvoiced consonants are not counted, so
  fluent speech scores about 0.4-0.7 (espeak-ng), silence and noise about 0.
* **Pitch** -- median F0 over the speech frames (the lower middle value for an even count), by
  YIN (de Cheveigné & Kawahara 2002) with parabolic interpolation; NaN without speech frames.
* **Loudness** -- RMS level of the window's samples in dBFS (a full-scale sine is -3.01 dBFS),
  floored at -100 dBFS for digital silence.
* **MFCC** -- mean over the complete frames of torchaudio's MFCC (DCT of the 80 dB-clamped
  log-mel power spectrum, ``n_mels`` bands).

Windows reaching past the end of the audio use the samples that are there.  A window's
features depend on its own samples only (YIN's lookahead past the window end sees zeros), so
they do not depend on how the clip was cut into chunks.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torchaudio
from pydantic import Field, model_validator

from models.speech import VoiceActivityConfig, yin
from operators.batches import ragged
from operators.resources import StageResources
from operators.schema import (
    AUDIO,
    AUDIO_START_S,
    CHUNK_END_S,
    CHUNK_START_S,
    HAS_AUDIO,
    N_MFCC,
    SAMPLE_RATE,
    VOICE_LOUDNESS_DB,
    VOICE_MFCC,
    VOICE_PITCH_HZ,
    VOICE_SPEECH_RATIO,
    VOICE_WINDOW_START_S,
)
from operators.step import Step

logger = logging.getLogger(__name__)

LOUDNESS_FLOOR_DB = -100.0
"""Level reported for digital silence: finite, and below 16-bit audio's ~ -96 dBFS noise floor."""


class VoiceFeaturesConfig(VoiceActivityConfig):
    """Settings of :class:`VoiceFeatures`; made on the driver, passed via fn_constructor_kwargs.

    The frame grid, pitch range and speech-frame thresholds are :class:`VoiceActivityConfig`'s
    (shared with the voice model's prosody); these are the timeline's own."""

    # The timeline's window: long enough for a few syllables and a stable pitch median.
    window_s: float = Field(1.0, gt=0)
    # 50 % overlap: a word at a window edge is still seen whole by the neighbouring window.
    hop_s: float = Field(0.5, gt=0)
    # 64 mel bands: fine enough for 13 cepstra, coarse enough that no band is empty at n_fft 400.
    n_mels: int = Field(64, gt=0)
    # The data contract's size: the timeline's MFCC_MEAN is a fixed-size list of N_MFCC.
    n_mfcc: int = Field(N_MFCC, gt=0)
    # A window "has speech" from one voiced syllable on (~ 0.15 s of a 1 s window).
    min_speech_ratio: float = Field(0.15, ge=0, le=1)

    @model_validator(mode="after")
    def _check_consistent(self) -> VoiceFeaturesConfig:
        if self.frame_s > self.window_s:
            raise ValueError(f"frame_s {self.frame_s} exceeds window_s {self.window_s}")
        if self.n_mfcc > self.n_mels:
            raise ValueError("n_mfcc cannot exceed n_mels")
        return self


def build_mfcc(sample_rate: int, config: VoiceFeaturesConfig) -> torchaudio.transforms.MFCC:
    """The MFCC transform on the feature frame grid (no centring: frame k starts at k hops)."""
    frame_len = round(config.frame_s * sample_rate)
    return torchaudio.transforms.MFCC(
        sample_rate=sample_rate,
        n_mfcc=config.n_mfcc,
        melkwargs={
            "n_fft": frame_len,
            "hop_length": round(config.frame_hop_s * sample_rate),
            "n_mels": config.n_mels,
            "center": False,
        },
    )


def hop_grid_starts(chunk_start_s: float, chunk_end_s: float, hop_s: float) -> np.ndarray:
    """Starts ``k * hop_s`` (float64 seconds) lying in ``[chunk_start_s, chunk_end_s)``.

    Empty when either bound is not finite.  A tolerance of 1e-9 hop absorbs float error, so a
    chunk starting at 10.0 owns the window at 10.0 whatever the rounding of 10.0 / hop_s.
    """
    if not (math.isfinite(chunk_start_s) and math.isfinite(chunk_end_s)):
        return np.empty(0, dtype=np.float64)
    first = math.ceil(chunk_start_s / hop_s - 1e-9)
    stop = math.ceil(chunk_end_s / hop_s - 1e-9)
    return np.arange(first, max(first, stop), dtype=np.float64) * hop_s


def window_voice_features(
    audio: np.ndarray,
    sample_rate: int,
    audio_start_s: float,
    window_starts: np.ndarray,
    config: VoiceFeaturesConfig,
    *,
    mfcc: torchaudio.transforms.MFCC | None = None,
) -> dict[str, np.ndarray]:
    """Voice features of the windows ``[s, s + config.window_s)`` for each s in window_starts.

    ``audio`` is 1-D (any float dtype), its first sample at clip time ``audio_start_s``;
    ``window_starts`` are clip times in seconds.  ``mfcc`` is a transform from
    :func:`build_mfcc` for the same sample rate and config (built here when not given).

    Returns float32 arrays keyed by the column names they fill: ``VOICE_SPEECH_RATIO``,
    ``VOICE_PITCH_HZ``, ``VOICE_LOUDNESS_DB`` (each ``(n_windows,)``) and ``VOICE_MFCC``
    (``(n_windows, config.n_mfcc)``).  Windows reaching past the audio use the samples that are
    there; windows without any sample get speech ratio 0 and NaN otherwise; pitch is NaN
    without speech frames, MFCC NaN without a complete 25 ms frame.  Non-finite samples count
    as missing (damaged audio): a window with no complete frame of finite samples but some
    non-finite ones gets a NaN speech ratio too.  Raises ValueError on a non-finite
    ``audio_start_s`` or window start (a caller bug).  See the module docstring for the methods.
    """
    starts = np.asarray(window_starts, dtype=np.float64).reshape(-1)
    if not (math.isfinite(audio_start_s) and np.isfinite(starts).all()):
        raise ValueError("audio_start_s and window_starts must be finite")
    if mfcc is None:
        mfcc = build_mfcc(sample_rate, config)
    win_len = round(config.window_s * sample_rate)
    frame_len = round(config.frame_s * sample_rate)
    frame_hop = round(config.frame_hop_s * sample_rate)
    tau_min = max(2, math.floor(sample_rate / config.pitch_max_hz))
    tau_max = math.ceil(sample_rate / config.pitch_min_hz)

    with torch.inference_mode():
        # A copy: Ray hands batches out as read-only views of its object store.
        samples = torch.tensor(np.asarray(audio, dtype=np.float32).reshape(-1))
        offsets = torch.from_numpy(np.round((starts - audio_start_s) * sample_rate)).long()
        index = offsets[:, None] + torch.arange(win_len)
        in_range = (index >= 0) & (index < samples.numel())
        window = (
            samples[index.clamp(0, samples.numel() - 1)]
            if samples.numel()
            else torch.zeros(index.shape)
        )
        present = in_range & torch.isfinite(window)
        # Damaged audio (NaN from the decoder) is unknown, not silence: a window with no
        # complete frame but such samples gets no speech ratio.  Past the stream's end is
        # "nothing was recorded", i.e. no speech.
        damaged = (in_range & ~present).any(dim=-1)
        window = torch.where(present, window, 0.0)

        n_present = present.sum(dim=-1)
        mean_square = window.square().sum(dim=-1) / n_present.clamp(min=1)
        loudness = 10 * torch.log10(mean_square.clamp(min=10 ** (LOUDNESS_FLOOR_DB / 10)))
        loudness = torch.where(n_present > 0, loudness, torch.nan)

        complete = present.unfold(-1, frame_len, frame_hop).all(dim=-1)
        frames = window.unfold(-1, frame_len, frame_hop)
        frame_db = 10 * torch.log10(frames.square().mean(dim=-1).clamp(min=1e-10))
        # YIN compares each frame with the next tau_max + 1 samples.  Past the window's end
        # those count as zeros, so a window depends on its own samples only, whatever the
        # chunking; it only makes the last ~ 2 frames slightly less periodic.
        lookahead = torch.nn.functional.pad(window, (0, tau_max + 1))
        pitch_frames = lookahead.unfold(-1, frame_len + tau_max + 1, frame_hop)
        period, voiced = yin(pitch_frames, frame_len, tau_min, config.voicing_threshold)
        speech = complete & voiced & (frame_db > config.speech_threshold_dbfs)
        n_complete = complete.sum(dim=-1)
        speech_ratio = speech.sum(dim=-1) / n_complete.clamp(min=1)
        speech_ratio = torch.where((n_complete == 0) & damaged, torch.nan, speech_ratio)
        f0 = torch.where(speech, sample_rate / period, torch.nan)
        pitch = torch.nanmedian(f0, dim=-1).values

        cepstra = mfcc(window.unsqueeze(1)).squeeze(1)  # (n_windows, n_mfcc, n_frames)
        weights = complete.to(cepstra.dtype).unsqueeze(1)
        mfcc_mean = (cepstra * weights).sum(dim=-1) / n_complete.clamp(min=1).unsqueeze(-1)
        mfcc_mean = torch.where((n_complete > 0).unsqueeze(-1), mfcc_mean, torch.nan)

    return {
        VOICE_SPEECH_RATIO: speech_ratio.numpy().astype(np.float32),
        VOICE_PITCH_HZ: pitch.numpy().astype(np.float32),
        VOICE_LOUDNESS_DB: loudness.numpy().astype(np.float32),
        VOICE_MFCC: mfcc_mean.numpy().astype(np.float32),
    }


def _float_or_nan(value: object) -> float:
    """A numpy batch holds a null float as NaN, or as None in an all-null (object) column."""
    return math.nan if value is None else float(value)


class VoiceFeatures(Step):
    """Chunk audio → voice features per window.

    The torchaudio transforms are built once per worker (``setup``) from a
    :class:`VoiceFeaturesConfig` made on the driver.

    * Reads, per chunk row: ``AUDIO`` (16 kHz mono float32 samples of any length, as an object
      array of arrays or a 2-D array; ``None`` or empty where there are none),
      ``AUDIO_START_S`` (clip time of ``AUDIO[0]``), ``CHUNK_START_S``, ``CHUNK_END_S``,
      ``HAS_AUDIO``.
    * Writes, per chunk row, one entry per analysis window whose start lies in
      ``[CHUNK_START_S, CHUNK_END_S)`` on the grid ``k * hop_s`` (seconds from the clip's
      t = 0): ``VOICE_WINDOW_START_S`` (float64), ``VOICE_SPEECH_RATIO``, ``VOICE_PITCH_HZ``,
      ``VOICE_LOUDNESS_DB`` (float32) and ``VOICE_MFCC`` (float32, ``(n_windows, n_mfcc)``),
      each as a 1-D object array holding one np.ndarray per row.  The decoder delivers
      ``window_s - hop_s`` seconds of audio past the chunk end so the last windows complete.
    * Drops ``AUDIO``: it is the heaviest column and no later stage needs the samples.  Every
      other column passes through unchanged.
    * Missing audio is missing, not silence: rows with ``HAS_AUDIO`` false or null, or without
      samples, keep their window grid with every feature NaN, speech ratio included (the
      timeline writes nulls).  Windows of a row with audio that hold no samples (past the end of
      a short audio stream) get speech ratio 0 and NaN pitch, loudness and MFCC; non-finite
      samples (a damaged stretch) count as missing, and a window of nothing else gets NaN.
      A row whose chunk bounds are null or not finite (an error row without media) gets zero
      windows; a row with samples but no finite ``AUDIO_START_S`` is
      treated as without audio and logged.  Nothing raises on bad data.
    * Cost: vectorised torch, ~ 0.15 s of one core per minute of audio (~ 16 ms per 10 s
      chunk), a few MB per chunk beyond the batch itself; a task with the decoder's
      resources, fused into the decode task.
    """

    name = "VoiceFeatures"
    reads = (AUDIO, AUDIO_START_S, CHUNK_START_S, CHUNK_END_S, HAS_AUDIO)
    writes = (VOICE_WINDOW_START_S, VOICE_SPEECH_RATIO, VOICE_PITCH_HZ, VOICE_LOUDNESS_DB,
              VOICE_MFCC)
    drops = (AUDIO,)

    def __init__(self, config: VoiceFeaturesConfig | None = None,
                 resources: StageResources | None = None) -> None:
        super().__init__(resources)
        self.config = config if config is not None else VoiceFeaturesConfig()

    def setup(self) -> None:
        self._mfcc = build_mfcc(SAMPLE_RATE, self.config)

    def process(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cfg = self.config
        columns: dict[str, list[np.ndarray]] = {
            VOICE_WINDOW_START_S: [],
            VOICE_SPEECH_RATIO: [],
            VOICE_PITCH_HZ: [],
            VOICE_LOUDNESS_DB: [],
            VOICE_MFCC: [],
        }
        for i in range(len(batch[CHUNK_START_S])):
            starts = hop_grid_starts(
                _float_or_nan(batch[CHUNK_START_S][i]),
                _float_or_nan(batch[CHUNK_END_S][i]),
                cfg.hop_s,
            )
            audio = batch[AUDIO][i]
            samples = (
                np.empty(0, np.float32)
                if audio is None
                else np.asarray(audio, dtype=np.float32).reshape(-1)
            )
            audio_start_s = _float_or_nan(batch[AUDIO_START_S][i])
            usable = bool(batch[HAS_AUDIO][i]) and samples.size > 0
            if usable and not math.isfinite(audio_start_s):
                # Samples without a time cannot be placed on the grid: a decoder bug, but one
                # row's bug should not fail the whole block.
                logger.warning(
                    "chunk row %d has audio but no %s; features set to NaN", i, AUDIO_START_S
                )
                usable = False
            if usable:
                features = window_voice_features(
                    samples, SAMPLE_RATE, audio_start_s, starts, cfg, mfcc=self._mfcc
                )
            else:
                features = {
                    VOICE_SPEECH_RATIO: np.full(starts.size, np.nan, dtype=np.float32),
                    VOICE_PITCH_HZ: np.full(starts.size, np.nan, dtype=np.float32),
                    VOICE_LOUDNESS_DB: np.full(starts.size, np.nan, dtype=np.float32),
                    VOICE_MFCC: np.full((starts.size, cfg.n_mfcc), np.nan, dtype=np.float32),
                }
            features[VOICE_WINDOW_START_S] = starts
            for name, values in columns.items():
                values.append(features[name])
        logger.debug(
            "voice features for %d chunk rows, %d windows",
            len(columns[VOICE_WINDOW_START_S]),
            sum(starts.size for starts in columns[VOICE_WINDOW_START_S]),
        )
        out = {name: values for name, values in batch.items() if name != AUDIO}
        out.update({name: ragged(values) for name, values in columns.items()})
        return out
