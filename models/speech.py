"""Speech-frame analysis shared by the timeline's voice features and the voice model's prosody.

Both cut audio into the same frames and call a frame *speech* by the same rule, so the
timeline's ``voice_speech_ratio``/``voice_pitch_hz`` and the voice model's prosody vector agree
for the same window:

* :class:`VoiceActivityConfig`: the frame grid, the pitch range and the voice activity
  thresholds (a frame is speech when its RMS level exceeds ``speech_threshold_dbfs`` and
  :func:`yin` finds it periodic with F0 in ``[pitch_min_hz, pitch_max_hz]``);
* :func:`yin`: the YIN pitch tracker (de Cheveigné & Kawahara 2002) on batches of frames.

Plain torch, no I/O.  The timeline step (``operators/audio/voice_features.py``) extends the
config with its window and MFCC settings.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


class VoiceActivityConfig(BaseModel):
    """Frame grid, pitch range and voice activity rule of speech-frame analysis."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The classic speech frame: short enough to be stationary, holds 1.5 periods at 60 Hz.
    frame_s: float = Field(0.025, gt=0)
    # 10 ms frame hop, the usual speech rate of analysis (the schema's "10 ms frames").
    frame_hop_s: float = Field(0.010, gt=0)
    # Between webcam speech frames (typically -35..-15 dBFS) and room noise (-70..-55 dBFS).
    speech_threshold_dbfs: float = -45.0
    # YIN aperiodicity: 0.35 admits ~ 55 % of loud espeak frames; < 0.2 % of 300 Hz-lowpass noise.
    voicing_threshold: float = Field(0.35, gt=0, lt=1)
    # Just below the lowest speaking F0 of adult men (~ 65 Hz); 50 Hz mains hum stays out.
    pitch_min_hz: float = Field(60.0, gt=0)
    # Above excited female speech (~ 350 Hz); higher "pitches" are mostly harmonics.
    pitch_max_hz: float = Field(400.0, gt=0)

    @model_validator(mode="after")
    def _check_pitch_range(self) -> VoiceActivityConfig:
        if self.pitch_min_hz >= self.pitch_max_hz:
            raise ValueError("pitch_min_hz must be below pitch_max_hz")
        return self


def yin(
    frames: torch.Tensor, integration_len: int, tau_min: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """YIN period (in samples) and voicing of ``frames`` (..., integration_len + tau_max + 1).

    Lags ``tau_min .. tau_max`` are searched.  A frame is voiced when its cumulative-mean-
    normalised difference (CMND) dips below ``threshold`` there; its period is the local minimum
    that follows the first such dip (the first dip rather than the global minimum avoids
    octave-down errors), refined by parabolic interpolation.  Unvoiced periods are NaN.
    """
    length = frames.shape[-1]
    n_fft = 1 << (length - 1).bit_length()
    lags = torch.arange(length - integration_len + 1, device=frames.device)  # 0 .. tau_max + 1
    # r(tau) = sum_{j<W} x_j x_{j+tau}: with n_fft >= length the circular correlation does not
    # wrap for these lags.
    spec_head = torch.fft.rfft(frames[..., :integration_len], n=n_fft)
    spec_full = torch.fft.rfft(frames, n=n_fft)
    corr = torch.fft.irfft(spec_head.conj() * spec_full, n=n_fft)[..., : lags.numel()]
    energy = torch.nn.functional.pad(torch.cumsum(frames.square(), dim=-1), (1, 0))
    energy_shifted = energy[..., lags + integration_len] - energy[..., lags]
    energy_head = energy[..., integration_len : integration_len + 1]
    diff = (energy_head + energy_shifted - 2 * corr).clamp(min=0)
    cum_mean = torch.cumsum(diff[..., 1:], dim=-1) / lags[1:]
    # Where the running mean is 0 (digital silence) the frame is aperiodic by definition.
    cmnd = torch.where(cum_mean > 0, diff[..., 1:] / cum_mean.clamp(min=1e-12), 1.0)
    # cmnd[..., i] is lag i + 1; `search` holds lags tau_min - 1 .. tau_max + 1 so that every
    # candidate lag in `inner` (tau_min .. tau_max) has both neighbours.
    search = cmnd[..., tau_min - 2 :]
    inner = search[..., 1:-1]
    below = inner < threshold
    voiced = below.any(dim=-1)
    first = below.int().argmax(dim=-1, keepdim=True)
    rising = search[..., 2:] >= inner
    rising[..., -1] = True  # a dip still falling at tau_max ends there
    positions = torch.arange(inner.shape[-1], device=frames.device)
    k = ((positions >= first) & rising).int().argmax(dim=-1, keepdim=True)
    y0, y1, y2 = search.gather(-1, k), search.gather(-1, k + 1), search.gather(-1, k + 2)
    curvature = y0 - 2 * y1 + y2
    shift = torch.where(curvature > 0, 0.5 * (y0 - y2) / curvature.clamp(min=1e-12), 0.0)
    period = ((k + tau_min).to(frames.dtype) + shift.clamp(-1, 1)).squeeze(-1)
    return torch.where(voiced, period, torch.nan), voiced

