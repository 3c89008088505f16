"""The voice training recipe as the job runs it (the shipped voice model's recipe): a training
batch of fresh random crops then masked log-mels, utterance-level evaluation, circumplex
valence/arousal targets and their MSE loss, and the prepared ``samples: speech`` rows.  Plain
Python on real (espeak-ng) speech from the RAVDESS fixture, without Ray except for the one
preparation test.  The building blocks themselves are tested in tests/pipelines/train/."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from models.emotions import CIRCUMPLEX
from operators.schema import EMOTIONS, SAMPLE_RATE
from pipelines.train.corpora.parquet import prepared_schema, read_prepared
from pipelines.train.media import load_audio
from pipelines.train.utterances import speech_bounds, utterance_windows
from pipelines.train_model.config import AugmentConfig, DataSource, TrainJobConfig
from pipelines.train_model.loop import compute_loss, evaluate_model
from pipelines.train_model.prepare import circumplex_targets, prepare_source
from pipelines.train_model.tasks import AUDIO_LENGTH, TASKS, Outputs, RowDataset

SMALL = {"channels": [8, 16, 32], "embed_dim": 32, "attention_dim": 16, "n_mels": 40,
         "hop_length": 320}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
        starts = utterance_windows(len(long), SAMPLE_RATE, SAMPLE_RATE // 2)
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


@pytest.mark.integration
def test_speech_samples_from_ravdess(ray_local, ravdess_root, tmp_path):
    source = DataSource(format="ravdess", uri=str(ravdess_root), samples="speech",
                        va_targets="circumplex")
    out = prepare_source("voice", source, str(tmp_path / "speech"))
    table = read_prepared(out)
    assert table.groupby("uri").size().eq(1).all() and len(table) == 7  # one row per file
    for _, row in table.iterrows():
        whole = load_audio(row["uri"])
        first, last = speech_bounds(whole, 35.0)
        audio = np.asarray(row["audio"], np.float32)
        np.testing.assert_allclose(audio, whole[first:last], atol=1e-6)
        assert row["start_s"] == pytest.approx(first / SAMPLE_RATE)
        assert row["end_s"] == pytest.approx(last / SAMPLE_RATE)
        assert last - first < len(whole)  # espeak-ng's leading/trailing silence is cut
        name = EMOTIONS[row["label"]]
        assert (row["valence"], row["arousal"]) == pytest.approx(CIRCUMPLEX[name])
    assert pq.read_schema(next(iter(sorted(Path(out).rglob("*.parquet"))))).equals(
        prepared_schema("voice"))
