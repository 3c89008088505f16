"""What the voice emotion model sees: normalised log-mel spectrograms and a prosody vector.

Both take a batch of analysis windows, ``(B, samples)`` mono float waveforms (nominally in
[-1, 1]), and are plain torch/numpy: no Ray, nothing loaded from disk.

Log-mel (:class:`LogMel`, :func:`log_mel`)
------------------------------------------
Power mel spectrogram (25 ms Hann frames every 10 ms, centred, ``n_mels`` HTK mel bands from
20 Hz to Nyquist) in dB, clamped at 80 dB below each window's maximum, then **standardised per
window**: minus the mean and divided by the standard deviation over all its mel bins and frames
(one scalar each).  This removes the recording gain, which differs by tens of dB between
webcams and participants, while keeping the spectral tilt and the time-frequency pattern that
carry emotion; absolute level is reported separately by :func:`prosody_vector`.  Per-band
normalisation was not used because over a 1 s window it would also remove the speaker's
long-term spectrum (voice quality), not only the channel.  The standard deviation is floored
at 1 dB so digital silence maps to zeros instead of amplified rounding noise.  A 1 s window at
16 kHz gives ``(1, 64, 101)``.

Speaker normalisation (:func:`speaker_statistics`, :func:`normalise_speaker`)
-----------------------------------------------------------------------------
Models trained with ``speaker_norm`` (a checkpoint hparam) take the log-mel above minus one
speaker's per-band mean and divided by its per-band standard deviation, both taken over the
frames of that speaker's speech windows.  This removes what is constant in a speaker's voice
(vocal tract, voice quality, microphone), which a model trained on 16 speakers otherwise
learns as if it were emotion, and keeps what changes from one utterance to the next.  It needs
several seconds of the same speaker: a session recording has minutes.  The statistics of a set
of windows (one actor in training and evaluation, one chunk of a recording in the timeline
job) are over its *speech windows*: those whose RMS level is above
:data:`SPEECH_FLOOR_DBFS` and within :data:`SPEECH_RANGE_DB` of the set's loudest window, so
silences between utterances do not pull the mean towards the clamp floor; a set without such a
window uses all of its windows.

Prosody (:func:`prosody_vector`, :data:`PROSODY_FEATURES`)
----------------------------------------------------------
Computed on the same 25 ms / 10 ms frame grid and with the same YIN pitch tracker and voice
activity rule as the timeline's voice features (``operators/audio/voice_features.py``; both
from :mod:`models.speech`): a frame is *speech* when its RMS level exceeds
``speech_threshold_dbfs`` and YIN finds it periodic with F0 in ``[pitch_min_hz,
pitch_max_hz]``.  So ``voice_activity_ratio`` and ``pitch_median_hz`` equal the timeline's
``voice_speech_ratio`` and ``voice_pitch_hz`` for the same window.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torchaudio
from torch import nn

# The frame rule and YIN implementation of the timeline's voice features, shared so that the
# model's prosody and the timeline's pitch/speech columns cannot drift apart.
from models.speech import VoiceActivityConfig, yin
from operators.schema import SAMPLE_RATE

N_FFT = 400
"""FFT size and frame length in samples: 25 ms at 16 kHz, the classic quasi-stationary frame."""
HOP_LENGTH = 160
"""Frame hop in samples: 10 ms at 16 kHz."""
N_MELS = 64
"""Mel bands: the usual resolution of speech-emotion CNNs; no band is empty at n_fft 400."""
F_MIN = 20.0
"""Lowest mel edge: below the lowest F0 but above DC and most handling rumble."""
TOP_DB = 80.0
"""Dynamic range kept below each window's loudest bin; quieter bins are clamped."""
STD_FLOOR_DB = 1.0
"""Floor of the per-window standard deviation, so near-constant windows are not blown up."""

SPEECH_FLOOR_DBFS = -50.0
"""Speech windows of the speaker statistics are louder than this (RMS over the window, pauses
included): faint room noise is not a voice."""
SPEECH_RANGE_DB = 35.0
"""...and within this of the loudest window of the set: the range ``utterances.speech_bounds``
keeps when it trims a clip to its speech."""
SPEAKER_STD_FLOOR = 0.1
"""Floor of a band's speaker standard deviation (in per-window standardised units, where a
band's spread over speech is ~0.5-1), so a near-constant band is not blown up."""

PROSODY_FEATURES: tuple[str, ...] = (
    "pitch_median_hz",
    "pitch_iqr_hz",
    "loudness_mean_dbfs",
    "loudness_std_db",
    "voiced_onsets_per_s",
    "voice_activity_ratio",
    "speech_present",
)
"""Column names of :func:`prosody_vector`'s output, in order.

* ``pitch_median_hz``, ``pitch_iqr_hz``: median and inter-quartile range (linear-interpolated
  quartiles) of F0 over the speech frames.
* ``loudness_mean_dbfs``, ``loudness_std_db``: mean and (population) standard deviation of the
  frame RMS level in dBFS (a full-scale sine is -3.01 dBFS) over the speech frames.
* ``voiced_onsets_per_s``: starts of voiced segments per second of window, a proxy for the
  syllable rate (each syllable nucleus is a vowel, hence voiced).  The speech-frame mask is
  first closed and then opened over 3 frames, so gaps and blips of up to 20 ms (YIN dropouts
  inside a vowel) do not count as segments.  It undercounts syllables joined by voiced
  consonants ("we were"), counts pauses in the denominator, and counts a segment already
  under way at the window's start.
* ``voice_activity_ratio``: share of frames that are speech.
* ``speech_present``: 1 where the window has at least one speech frame, else 0.  It is the
  mask of the pitch and loudness entries, which are 0 where it is 0 (undefined, not measured);
  the onset rate and activity ratio are always defined.
"""

SMOOTHING_FRAMES = 3
"""Width of the closing/opening of the speech mask before counting onsets (see above)."""

_ALWAYS_DEFINED = torch.tensor(
    [
        name in ("voiced_onsets_per_s", "voice_activity_ratio", "speech_present")
        for name in PROSODY_FEATURES
    ]
)
"""Which prosody entries are defined without speech (the others are masked to 0)."""


class LogMel(nn.Module):
    """``(B, samples)`` waveform → ``(B, 1, n_mels, 1 + samples // hop_length)`` normalised dB.

    See the module docstring for the method.  Each window is processed independently of the
    others in the batch.  Scriptable (it is the front end of the exported TorchScript model).
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = N_FFT,
        hop_length: int = HOP_LENGTH,
        n_mels: int = N_MELS,
    ) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.hop_length = hop_length
        self.std_floor_db = STD_FLOOR_DB  # an attribute: TorchScript cannot read module globals
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=F_MIN,
            f_max=sample_rate / 2,
            power=2.0,
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=TOP_DB)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.shape[0] == 0:
            # The STFT's reflect padding rejects an empty batch.
            return waveform.new_zeros(
                (0, 1, self.n_mels, 1 + waveform.shape[-1] // self.hop_length)
            )
        # 4-D input, so that AmplitudeToDB's top_db cut-off is taken per window (on 3-D input
        # it is one cut-off for the whole batch, which would couple the windows).
        spec = self.to_db(self.mel(waveform).unsqueeze(1))
        mean = spec.mean(dim=(1, 2, 3), keepdim=True)
        std = spec.std(dim=(1, 2, 3), keepdim=True).clamp(min=self.std_floor_db)
        return (spec - mean) / std


@functools.lru_cache(maxsize=8)
def _log_mel_transform(sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> LogMel:
    return LogMel(sample_rate, n_fft, hop_length, n_mels)


def _as_batch(waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A 2-D finite float32 tensor, or ValueError (a caller bug, not a data condition)."""
    batch = torch.as_tensor(waveform, dtype=torch.float32)
    if batch.dim() != 2:
        raise ValueError(f"expected waveforms of shape (B, samples), got {tuple(batch.shape)}")
    if not bool(torch.isfinite(batch).all()):
        raise ValueError("waveforms contain non-finite samples")
    return batch


def log_mel(
    waveform: torch.Tensor | np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    n_mels: int = N_MELS,
) -> torch.Tensor:
    """Normalised log-mel spectrograms ``(B, 1, n_mels, 1 + samples // hop_length)`` float32.

    ``waveform`` is ``(B, samples)`` at ``sample_rate`` with ``samples > n_fft // 2`` (the
    STFT's reflect padding).  The same transform as the network's front end for the same
    settings.  Raises ValueError on another shape or non-finite samples.
    """
    batch = _as_batch(waveform)
    return _log_mel_transform(sample_rate, n_fft, hop_length, n_mels)(batch)


def speech_window_mask(waveform: torch.Tensor, floor_dbfs: float = SPEECH_FLOOR_DBFS,
                       range_db: float = SPEECH_RANGE_DB) -> torch.Tensor:
    """``(B,)`` bool: the windows of ``(B, samples)`` that count as speech in the speaker
    statistics (see :data:`SPEECH_FLOOR_DBFS`, :data:`SPEECH_RANGE_DB`); all of them when
    none does.  Scriptable."""
    level = 10 * torch.log10(waveform.square().mean(dim=1).clamp(min=1e-10))
    if level.numel() == 0:
        return level > 0
    speech = (level > floor_dbfs) & (level >= level.max() - range_db)
    if not bool(speech.any()):
        return torch.ones_like(speech)
    return speech


def speaker_statistics(spec: torch.Tensor, speech: torch.Tensor,
                       std_floor: float = SPEAKER_STD_FLOOR) -> torch.Tensor:
    """``(2, n_mels)``: per-band mean and standard deviation (floored at
    :data:`SPEAKER_STD_FLOOR`) of one speaker's log-mel ``spec`` ``(B, 1, n_mels, frames)``
    over the frames of the windows where ``speech`` ``(B,)`` is true.  An empty set gives the
    identity (mean 0, std 1).  Scriptable."""
    selected = spec[speech]
    if selected.shape[0] == 0:
        stats = spec.new_zeros((2, spec.shape[2]))
        stats[1] = 1.0
        return stats
    frames = selected[:, 0].transpose(0, 1).reshape(spec.shape[2], -1)  # (n_mels, frames)
    mean = frames.mean(dim=1)
    std = frames.std(dim=1, unbiased=False).clamp(min=std_floor)
    return torch.stack([mean, std])


def normalise_speaker(spec: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """``spec`` ``(B, 1, n_mels, frames)`` with its speaker's statistics taken off per band:
    ``stats`` ``(2, n_mels)`` for the whole batch or ``(B, 2, n_mels)`` per window (from
    :func:`speaker_statistics`).  Scriptable."""
    if stats.dim() == 2:
        stats = stats.unsqueeze(0)
    return (spec - stats[:, 0, None, :, None]) / stats[:, 1, None, :, None]


def _close_open(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Morphological closing then opening of a (B, T) boolean mask along T."""

    def dilate(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.max_pool1d(x, width, stride=1, padding=width // 2)

    def erode(x: torch.Tensor) -> torch.Tensor:
        return 1 - dilate(1 - x)

    x = mask.float().unsqueeze(1)
    return dilate(erode(erode(dilate(x)))).squeeze(1) > 0.5


def prosody_vector(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    config: VoiceActivityConfig | None = None,
) -> np.ndarray:
    """Prosody of each window: ``(B, len(PROSODY_FEATURES))`` float32, NaN-free.

    ``waveform`` is ``(B, samples)`` at ``sample_rate``, at least one frame long
    (``config.frame_s``).  ``config`` supplies the frame grid, pitch range and voice activity
    thresholds (the timeline's defaults when not given).  Entries are in the order of
    :data:`PROSODY_FEATURES`; undefined ones (pitch and loudness of a window without speech)
    are 0 with ``speech_present`` 0.  Raises ValueError on another shape, non-finite samples
    or a window shorter than one frame.
    """
    cfg = config if config is not None else VoiceActivityConfig()
    batch = _as_batch(waveform)
    frame_len = round(cfg.frame_s * sample_rate)
    frame_hop = round(cfg.frame_hop_s * sample_rate)
    if batch.shape[-1] < frame_len:
        raise ValueError(
            f"windows of {batch.shape[-1]} samples are shorter than one frame ({frame_len} samples)"
        )
    if batch.shape[0] == 0:
        # torch's FFT rejects an empty batch.
        return np.zeros((0, len(PROSODY_FEATURES)), dtype=np.float32)
    tau_min = max(2, math.floor(sample_rate / cfg.pitch_max_hz))
    tau_max = math.ceil(sample_rate / cfg.pitch_min_hz)

    with torch.inference_mode():
        frames = batch.unfold(-1, frame_len, frame_hop)
        frame_db = 10 * torch.log10(frames.square().mean(dim=-1).clamp(min=1e-10))
        # As in window_voice_features: YIN looks past the window's end into zeros, so a
        # window's prosody depends on its own samples only.
        lookahead = torch.nn.functional.pad(batch, (0, tau_max + 1))
        pitch_frames = lookahead.unfold(-1, frame_len + tau_max + 1, frame_hop)
        period, voiced = yin(pitch_frames, frame_len, tau_min, cfg.voicing_threshold)
        speech = voiced & (frame_db > cfg.speech_threshold_dbfs)

        n_speech = speech.sum(dim=-1)
        has_speech = n_speech > 0
        f0 = torch.where(speech, sample_rate / period, torch.nan)
        pitch_median = torch.nanmedian(f0, dim=-1).values
        quartiles = torch.nanquantile(f0, torch.tensor([0.25, 0.75]), dim=-1)
        pitch_iqr = quartiles[1] - quartiles[0]
        weights = speech.float()
        count = n_speech.clamp(min=1).float()
        loud_mean = (frame_db * weights).sum(dim=-1) / count
        loud_var = ((frame_db - loud_mean.unsqueeze(-1)).square() * weights).sum(dim=-1) / count

        segments = _close_open(speech, SMOOTHING_FRAMES)
        onsets = segments[:, :1].sum(dim=-1) + (segments[:, 1:] & ~segments[:, :-1]).sum(dim=-1)
        duration_s = batch.shape[-1] / sample_rate

        columns = [
            pitch_median,
            pitch_iqr,
            loud_mean,
            loud_var.sqrt(),
            onsets / duration_s,
            n_speech / speech.shape[-1],
            has_speech.float(),
        ]
        out = torch.stack([c.float() for c in columns], dim=-1)
        # Undefined entries are exactly 0 (the mask says so), never NaN.
        out = torch.where(has_speech.unsqueeze(-1) | _ALWAYS_DEFINED, out, 0.0)
    return out.numpy()
