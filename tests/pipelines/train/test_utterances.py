"""Utterances (pipelines/train/utterances.py) on real (espeak-ng) speech from the RAVDESS
fixture: speech trimming, the loudest windows, fresh random crops per epoch and evaluation
windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from operators.schema import SAMPLE_RATE
from pipelines.train.utterances import (
    TRIM_FRAME,
    TRIM_HOP,
    loudest_windows,
    random_crops,
    speech_bounds,
    utterance_windows,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_speech_bounds_cut_the_silence_around_an_utterance(utterance):
    pad = np.zeros(SAMPLE_RATE // 2, np.float32)
    first, last = speech_bounds(np.concatenate([pad, utterance, pad]), top_db=35.0)
    # within one 10 ms hop / 25 ms frame of where the utterance was put
    assert len(pad) - TRIM_HOP <= first <= len(pad) + TRIM_HOP
    end = len(pad) + len(utterance)
    assert end - TRIM_HOP <= last <= end + TRIM_FRAME
    # a stricter threshold keeps less (only the loud core)
    strict = speech_bounds(np.concatenate([pad, utterance, pad]), top_db=10.0)
    assert strict[0] >= first and strict[1] <= last and strict[1] - strict[0] < last - first
    assert speech_bounds(np.zeros(8000, np.float32)) == (0, 8000)  # nothing to keep apart
    assert speech_bounds(utterance[:100]) == (0, 100)  # shorter than a frame


def test_loudest_windows_pick_speech_not_silence():
    quiet, loud = np.zeros(SAMPLE_RATE, np.float32), np.full(SAMPLE_RATE, 0.5, np.float32)
    audio = np.concatenate([quiet, loud, quiet, loud * 0.5])
    assert loudest_windows(audio, 1.0, 1.0, 2) == [SAMPLE_RATE, 3 * SAMPLE_RATE]
    # overlapping windows: the loud second, then the first half-loud one (ties: earliest)
    assert loudest_windows(audio, 1.0, 0.5, 2) == [SAMPLE_RATE // 2, SAMPLE_RATE]
    assert loudest_windows(audio[:100], 1.0, 0.5, 2) == [0]  # shorter than one window


def _padded(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(r) for r in rows)
    audio = torch.zeros(len(rows), longest)
    for i, r in enumerate(rows):
        audio[i, :len(r)] = torch.from_numpy(r)
    return audio, torch.tensor([len(r) for r in rows])


def test_random_crops_lie_inside_the_speech_and_are_fresh_per_seed(utterance):
    size = SAMPLE_RATE
    short = utterance[:SAMPLE_RATE // 2]
    audio, lengths = _padded([utterance, short, utterance[:size]])
    windows, row = random_crops(audio, lengths, size, per_row=3, generator=seeded(0))
    assert windows.shape == (9, size) and row.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    starts = set()
    for window in windows[:3].numpy():  # long row: a contiguous piece of the utterance
        matches = [s for s in range(len(utterance) - size + 1)
                   if np.array_equal(utterance[s:s + size], window)]
        assert matches, "a crop of a long row is a window of its utterance (no padding)"
        starts.add(matches[0])
    assert len(starts) > 1  # three crops of one row are not all the same
    for window in windows[3:6].numpy():  # short row: placed whole, silence around it
        placed = [o for o in range(size - len(short) + 1)
                  if np.array_equal(window[o:o + len(short)], short)
                  and not window[:o].any() and not window[o + len(short):].any()]
        assert placed, "a short row is the whole signal at some offset, zeros elsewhere"
    # a row exactly one window long gives itself
    for window in windows[6:].numpy():
        np.testing.assert_array_equal(window, utterance[:size])
    again, _ = random_crops(audio, lengths, size, per_row=3, generator=seeded(0))
    other, _ = random_crops(audio, lengths, size, per_row=3, generator=seeded(1))
    torch.testing.assert_close(again, windows, rtol=0, atol=0)
    assert not torch.equal(other[:6], windows[:6])
    with pytest.raises(ValueError, match="lengths"):
        random_crops(audio, lengths[:2], size)


def test_short_row_offsets_cover_the_window(utterance):
    short = np.ones(4000, np.float32)
    audio, lengths = _padded([short])
    windows, _ = random_crops(audio, lengths, 16000, per_row=200, generator=seeded(3))
    offsets = np.array([int(np.flatnonzero(w)[0]) for w in windows.numpy()])
    assert offsets.min() >= 0 and offsets.max() <= 12000
    assert offsets.max() - offsets.min() > 6000  # spread over the room, not one place
    assert (windows.sum(1) == 4000).all()  # the whole signal every time


def test_utterance_windows():
    assert utterance_windows(40000, 16000, 8000) == [0, 8000, 16000, 24000]
    assert utterance_windows(39999, 16000, 8000) == [0, 8000, 16000]  # whole windows only
    assert utterance_windows(16000, 16000, 8000) == [0]
    assert utterance_windows(9000, 16000, 8000) == [0]
