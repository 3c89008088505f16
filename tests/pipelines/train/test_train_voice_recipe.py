"""The voice training recipe's pieces (the shipped voice model's recipe, run by the job):
speech trimming, fresh random crops per epoch, SpecAugment masks, utterance-level
evaluation, circumplex valence/arousal targets and their MSE loss, and the prepared
``samples: speech`` rows.  Plain Python on real (espeak-ng) speech from the RAVDESS fixture,
without Ray except for the one preparation test."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from operators.audio.extract_audio import SAMPLE_RATE
from operators.fusion.build_timeline import CIRCUMPLEX
from operators.schema import EMOTIONS
from pipelines.train import datasets as ds
from pipelines.train_model.config import AugmentConfig, DataSource, TrainJobConfig
from pipelines.train_model.loop import compute_loss, evaluate_model
from pipelines.train_model.prepare import (
    circumplex_targets,
    prepare_source,
    prepared_schema,
    read_prepared,
)
from pipelines.train_model.tasks import AUDIO_LENGTH, TASKS, Outputs, RowDataset

SMALL = {"channels": [8, 16, 32], "embed_dim": 32, "attention_dim": 16, "n_mels": 40,
         "hop_length": 320}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def utterance(ravdess_root) -> np.ndarray:
    """One real utterance (espeak-ng, ~2 s), trimmed to its speech."""
    audio = ds.load_audio(str(sorted(ravdess_root.glob("Actor_01/*.flac"))[0]))
    first, last = ds.speech_bounds(audio)
    return audio[first:last]


def test_speech_bounds_cut_the_silence_around_an_utterance(utterance):
    pad = np.zeros(SAMPLE_RATE // 2, np.float32)
    first, last = ds.speech_bounds(np.concatenate([pad, utterance, pad]), top_db=35.0)
    # within one 10 ms hop / 25 ms frame of where the utterance was put
    assert len(pad) - ds.TRIM_HOP <= first <= len(pad) + ds.TRIM_HOP
    end = len(pad) + len(utterance)
    assert end - ds.TRIM_HOP <= last <= end + ds.TRIM_FRAME
    # a stricter threshold keeps less (only the loud core)
    strict = ds.speech_bounds(np.concatenate([pad, utterance, pad]), top_db=10.0)
    assert strict[0] >= first and strict[1] <= last and strict[1] - strict[0] < last - first
    assert ds.speech_bounds(np.zeros(8000, np.float32)) == (0, 8000)  # nothing to keep apart
    assert ds.speech_bounds(utterance[:100]) == (0, 100)  # shorter than a frame


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
    windows, row = ds.random_crops(audio, lengths, size, per_row=3, generator=seeded(0))
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
    again, _ = ds.random_crops(audio, lengths, size, per_row=3, generator=seeded(0))
    other, _ = ds.random_crops(audio, lengths, size, per_row=3, generator=seeded(1))
    torch.testing.assert_close(again, windows, rtol=0, atol=0)
    assert not torch.equal(other[:6], windows[:6])
    with pytest.raises(ValueError, match="lengths"):
        ds.random_crops(audio, lengths[:2], size)


def test_short_row_offsets_cover_the_window(utterance):
    short = np.ones(4000, np.float32)
    audio, lengths = _padded([short])
    windows, _ = ds.random_crops(audio, lengths, 16000, per_row=200, generator=seeded(3))
    offsets = np.array([int(np.flatnonzero(w)[0]) for w in windows.numpy()])
    assert offsets.min() >= 0 and offsets.max() <= 12000
    assert offsets.max() - offsets.min() > 6000  # spread over the room, not one place
    assert (windows.sum(1) == 4000).all()  # the whole signal every time


def test_spec_augment_masks_whole_bands_and_frames_with_the_mean():
    spec = torch.randn(6, 1, 40, 51) + 5.0  # no zeros of its own
    out = ds.spec_augment(spec, seeded(0), time_masks=2, freq_masks=2, max_fraction=0.15)
    assert out.shape == spec.shape
    zero = out == 0
    kept = ~zero
    torch.testing.assert_close(out[kept], spec[kept])  # what is not masked is untouched
    for item in zero[:, 0]:
        bands = item.all(1)  # mel bins masked over every frame
        frames = item.all(0)  # frames masked over every bin
        # every masked cell lies in a fully masked band or frame
        assert torch.equal(item, bands[:, None] | frames[None, :])
        assert int(bands.sum()) <= 2 * math.floor(0.15 * 40)
        assert int(frames.sum()) <= 2 * math.floor(0.15 * 51)
    assert bool(zero.any(dim=(1, 2, 3)).sum() >= 4)  # most items get some mask
    torch.testing.assert_close(ds.spec_augment(spec, seeded(0), max_fraction=0.15), out,
                               rtol=0, atol=0)
    assert not torch.equal(ds.spec_augment(spec, seeded(1), max_fraction=0.15), out)
    torch.testing.assert_close(ds.spec_augment(spec, seeded(0), time_masks=0, freq_masks=0),
                               spec)


def test_utterance_windows():
    assert ds.utterance_windows(40000, 16000, 8000) == [0, 8000, 16000, 24000]
    assert ds.utterance_windows(39999, 16000, 8000) == [0, 8000, 16000]  # whole windows only
    assert ds.utterance_windows(16000, 16000, 8000) == [0]
    assert ds.utterance_windows(9000, 16000, 8000) == [0]


def _job(**train) -> TrainJobConfig:
    source = {"format": "parquet", "uri": "unused"}
    return TrainJobConfig.model_validate({"task": "voice", "data": {"train": source,
                                                                    "val": source},
                                          "train": train})


def _table(rows: list[np.ndarray], labels: list[int]) -> pd.DataFrame:
    n = len(rows)
    return pd.DataFrame({"audio": rows, "label": labels, "label_dist": [None] * n,
                         "vote_dist": [None] * n, "valence": [0.5] * n,
                         "arousal": [-0.5] * n})


def test_voice_training_batch_is_crops_then_masked_log_mels(utterance):
    spec = TASKS["voice"]
    built = spec.build(spec.default_arch, SMALL, None, seed=0)
    table = _table([utterance, utterance[:12000]], [0, 3])
    dataset = RowDataset(table, spec, built)
    batch = spec.collate([dataset[0], dataset[1]])
    assert batch["audio"].shape == (2, max(len(utterance), SAMPLE_RATE))
    assert batch[AUDIO_LENGTH].tolist() == [len(utterance), 12000]
    job = _job(crops_per_sample=2)
    drawn = spec.sample(batch, built, job.train, seeded(0))
    assert drawn["audio"].shape == (4, SAMPLE_RATE) and AUDIO_LENGTH not in drawn
    assert drawn["label"].tolist() == [0, 0, 3, 3]  # targets follow their crops
    augmented = spec.augment(drawn, built, AugmentConfig(spec_time_masks=2, spec_freq_masks=2),
                             seeded(0))
    log_mel = augmented["audio"]
    assert log_mel.shape == (4, 1, 40, 51)  # the network's front end output
    assert bool((log_mel == 0).all(dim=2).any())  # some whole frame or band masked
    module = built.module.train()
    out = spec.forward(module, built, augmented)
    loss = compute_loss("cross_entropy", out, augmented, None, job, seeded(0))
    loss.backward()
    assert out.logits.shape == (4, len(EMOTIONS)) and math.isfinite(float(loss.detach()))
    assert module.trunk[0][0].weight.grad is not None
    plain = spec.augment(drawn, built, AugmentConfig(spec_time_masks=0, spec_freq_masks=0),
                         seeded(0))
    assert plain["audio"].shape == (4, SAMPLE_RATE)  # no masks: waveforms as before


def test_voice_evaluation_scores_the_utterance_by_its_windows(utterance):
    spec = TASKS["voice"]
    built = spec.build(spec.default_arch, SMALL, None, seed=0)
    long = np.concatenate([utterance, utterance])[:39000]
    table = _table([long, utterance[:SAMPLE_RATE], utterance[:9000]], [0, 1, 2])
    predictions = evaluate_model(spec, built, table)
    module = built.module.eval()
    with torch.inference_mode():
        starts = ds.utterance_windows(len(long), SAMPLE_RATE, SAMPLE_RATE // 2)
        assert starts == [0, 8000, 16000]
        windows = torch.stack([torch.from_numpy(long[s:s + SAMPLE_RATE]) for s in starts])
        expected = torch.softmax(module(windows).logits, 1).mean(0)
        padded = np.zeros(SAMPLE_RATE, np.float32)
        padded[:9000] = utterance[:9000]
        singles = torch.softmax(module(torch.from_numpy(np.stack(
            [utterance[:SAMPLE_RATE], padded]))).logits, 1)
    np.testing.assert_allclose(predictions.probs[0], expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(predictions.probs[1:], singles.numpy(), atol=1e-5)
    assert predictions.labels.tolist() == [0, 1, 2]


def test_circumplex_targets_and_their_mse_loss():
    table = pd.DataFrame({"label": [EMOTIONS.index("happy"), EMOTIONS.index("sad"), -1, 0],
                          "valence": [math.nan, math.nan, math.nan, 0.25],
                          "arousal": [math.nan, math.nan, math.nan, 0.75]})
    out = circumplex_targets(table)
    assert out["valence"].iloc[:2].tolist() == [CIRCUMPLEX["happy"][0], CIRCUMPLEX["sad"][0]]
    assert out["arousal"].iloc[:2].tolist() == [CIRCUMPLEX["happy"][1], CIRCUMPLEX["sad"][1]]
    assert math.isnan(out["valence"].iloc[2])  # unlabelled: nothing to derive
    assert out["valence"].iloc[3] == 0.25  # the corpus's own rating stays
    assert table["valence"].isna().sum() == 3  # the input is not changed

    logits = torch.zeros(2, len(EMOTIONS))
    out = Outputs(logits, torch.tensor([0.0, 0.5]), torch.tensor([0.0, 0.0]))
    batch = {"label": torch.tensor([0, 1]), "vote_dist": torch.full((2, len(EMOTIONS)), math.nan),
             "valence": torch.tensor([1.0, math.nan]), "arousal": torch.tensor([0.0, 1.0])}
    ce = compute_loss("cross_entropy", out, batch, None, _job(ccc_weight=0.0), None)
    mse = compute_loss("cross_entropy", out, batch, None, _job(ccc_weight=0.2, va_loss="mse"),
                       None)
    # squared errors of the known targets: (0 - 1)^2, (0 - 0)^2, (0 - 1)^2 -> mean 2/3
    assert float(mse - ce) == pytest.approx(0.2 * 2 / 3, rel=1e-5)


def test_speech_samples_from_ravdess(ray_local, ravdess_root, tmp_path):
    source = DataSource(format="ravdess", uri=str(ravdess_root), samples="speech",
                        va_targets="circumplex")
    out = prepare_source("voice", source, str(tmp_path / "speech"))
    table = read_prepared(out)
    assert table.groupby("uri").size().eq(1).all() and len(table) == 7  # one row per file
    for _, row in table.iterrows():
        whole = ds.load_audio(row["uri"])
        first, last = ds.speech_bounds(whole, 35.0)
        audio = np.asarray(row["audio"], np.float32)
        np.testing.assert_allclose(audio, whole[first:last], atol=1e-6)
        assert row["start_s"] == pytest.approx(first / SAMPLE_RATE)
        assert row["end_s"] == pytest.approx(last / SAMPLE_RATE)
        assert last - first < len(whole)  # espeak-ng's leading/trailing silence is cut
        name = EMOTIONS[row["label"]]
        assert (row["valence"], row["arousal"]) == pytest.approx(CIRCUMPLEX[name])
    assert pq.read_schema(next(iter(sorted(Path(out).rglob("*.parquet"))))).equals(
        prepared_schema("voice"))
