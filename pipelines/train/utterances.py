"""Utterances: where the speech is, its loudest windows, random training windows and
evaluation windows (16 kHz mono float waveforms, :data:`operators.schema.SAMPLE_RATE`)."""

from __future__ import annotations

import numpy as np
import torch

from operators.schema import SAMPLE_RATE

# 25 ms frames every 10 ms (at SAMPLE_RATE): the frames whose loudness decides where speech is.
TRIM_FRAME = 400
TRIM_HOP = 160


def speech_bounds(audio: np.ndarray, top_db: float = 35.0) -> tuple[int, int]:
    """``[start, end)`` samples of the speech in ``audio``: from the first to the last 25 ms
    frame (every 10 ms) whose power is within ``top_db`` of the loudest frame's.  Silence
    before and after an utterance carries no emotion, but the clip's label would be trained
    on it.  Digital silence (or a recording shorter than a frame) keeps the whole of it."""
    audio = np.asarray(audio, dtype=np.float64)
    if len(audio) < TRIM_FRAME:
        return 0, len(audio)
    starts = np.arange(0, len(audio) - TRIM_FRAME + 1, TRIM_HOP)
    frames = np.lib.stride_tricks.sliding_window_view(audio, TRIM_FRAME)[starts]
    power = np.mean(np.square(frames), axis=1)
    if power.max() <= 0:
        return 0, len(audio)
    loud = np.flatnonzero(power >= power.max() * 10 ** (-top_db / 10))
    return int(starts[loud[0]]), int(starts[loud[-1]] + TRIM_FRAME)


def random_crops(audio: torch.Tensor, lengths: torch.Tensor, size: int, per_row: int = 1,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_row`` random windows of ``size`` samples from each row of ``audio`` (B, T), whose
    first ``lengths[b]`` samples are the signal (the rest is padding): a start drawn uniformly
    so that the window lies inside the signal; a row shorter than ``size`` is placed whole at a
    random offset in a silent window instead.  Returns ``(windows (B * per_row, size), row
    (B * per_row,))`` — each window's source row, crops of one row adjacent.  Fresh draws every
    call (every epoch), reproducible from ``generator``."""
    if audio.dim() != 2 or lengths.shape != (audio.shape[0],):
        raise ValueError(f"random_crops takes audio (B, T) and lengths (B,), got "
                         f"{tuple(audio.shape)} and {tuple(lengths.shape)}")
    if per_row < 1 or size < 1:
        raise ValueError(f"per_row and size must be positive, got {per_row}, {size}")
    lengths = lengths.cpu().long().clamp(max=audio.shape[1])
    row = torch.arange(len(audio)).repeat_interleave(per_row)
    length = lengths[row]
    slack = (length - size).abs()  # room to move the crop (long) or the signal (short)
    shift = (torch.rand(len(row), generator=generator, dtype=torch.float64)
             * (slack + 1)).floor().long()
    position = torch.arange(size)[None, :]
    long = (length >= size)[:, None]
    # long rows: window = signal[shift : shift + size]; short: signal starts at `shift`
    source = torch.where(long, position + shift[:, None], position - shift[:, None])
    valid = (source >= 0) & (source < length[:, None])
    gathered = audio.cpu()[row[:, None], source.clamp(0, audio.shape[1] - 1)]
    windows = torch.where(valid, gathered, torch.zeros((), dtype=audio.dtype))
    return windows.to(audio.device), row.to(audio.device)


def utterance_windows(length: int, size: int, hop: int) -> list[int]:
    """Start samples of the evaluation windows of an utterance of ``length`` samples: every
    ``hop`` while a whole window fits; one window at 0 (padded) when it is shorter."""
    if length <= size:
        return [0]
    return list(range(0, length - size + 1, hop))


def loudest_windows(audio: np.ndarray, window_s: float, hop_s: float, limit: int
                    ) -> list[int]:
    """Start samples of the ``limit`` loudest (RMS) windows of ``window_s`` every ``hop_s`` of
    ``audio`` (at SAMPLE_RATE), in time order.  A recording shorter than one window gives one
    (short) window at 0."""
    size, hop = round(window_s * SAMPLE_RATE), round(hop_s * SAMPLE_RATE)
    if len(audio) <= size:
        return [0]
    starts = np.arange(0, len(audio) - size + 1, hop)
    rms = np.array([np.sqrt(np.mean(np.square(audio[s:s + size], dtype=np.float64)))
                    for s in starts])
    keep = np.sort(np.argsort(-rms, kind="stable")[:limit])
    return [int(s) for s in starts[keep]]
