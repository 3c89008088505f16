"""The per-task pieces of the training job, in one process without Ray: rows → tensors →
network → loss, for voice, fusion and temporal samples (the face task runs end to end in
test_job.py), the loss each FER+ scheme maps to, and the early-stopping/LR helpers.

Voice windows are espeak-ng speech (the RAVDESS fixture); fusion and temporal samples are
feature vectors, which is what those models take, drawn so that the class is readable from
them (a model that learns must fit them)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from operators.schema import EMOTIONS
from pipelines.train.media import load_audio
from pipelines.train_model.config import TrainJobConfig
from pipelines.train_model.loop import (
    _schedule,
    compute_loss,
    evaluate_model,
    loss_kind,
)
from pipelines.train_model.tasks import TASKS, Outputs, RowDataset

ANGRY, HAPPY = EMOTIONS.index("angry"), EMOTIONS.index("happy")


def _job(task: str, **train) -> TrainJobConfig:
    source = {"format": "parquet", "uri": "unused"}
    return TrainJobConfig.model_validate({"task": task, "data": {"train": source,
                                                                 "val": source},
                                          "train": train})


def _fit(task: str, table: pd.DataFrame, hparams: dict, steps: int, lr: float = 0.01,
         **train) -> tuple[float, float, object]:
    """Loss before and after ``steps`` full-batch Adam steps, and the built model."""
    spec = TASKS[task]
    built = spec.build(spec.default_arch, hparams, None, seed=0)
    job = _job(task, **train)
    kind = loss_kind(job, table)
    batch = spec.collate([RowDataset(table, spec, built)[i] for i in range(len(table))])
    module = built.module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = compute_loss(kind, spec.forward(module, built, batch), batch, None, job,
                            torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1], built


def _targets(labels, valence=None, arousal=None) -> dict:
    n = len(labels)
    return {"label": labels, "label_dist": [None] * n, "vote_dist": [None] * n,
            "valence": valence if valence is not None else [math.nan] * n,
            "arousal": arousal if arousal is not None else [math.nan] * n}


def test_voice_task_fits_speech_windows_with_ccc(ravdess_root):
    # The fixture speaks two statements; here they stand for two emotions.
    files = sorted(ravdess_root.rglob("*.flac"))
    audio = [load_audio(str(f))[4000:20000] for f in files]
    first_statement = [f.stem.split("-")[4] == "01" for f in files]
    labels = [ANGRY if s else HAPPY for s in first_statement]
    table = pd.DataFrame({"audio": audio, **_targets(
        labels, [-0.6 if s else 0.6 for s in first_statement],
        [0.8 if s else 0.2 for s in first_statement])})
    spec = TASKS["voice"]
    small = {"channels": [8, 16, 32], "embed_dim": 32, "attention_dim": 16, "dropout": 0.0}
    before = evaluate_model(spec, spec.build(spec.default_arch, small, None, seed=0), table)
    first, last, built = _fit("voice", table, small, steps=30)
    assert last < first * 0.5  # cross-entropy + (1 - CCC) both fall
    after = evaluate_model(spec, built, table)  # eval mode: BatchNorm's running statistics

    def p_true(p):
        return p.probs[np.arange(len(labels)), labels].mean()

    assert p_true(after) > p_true(before) + 0.2
    assert {"eval_ccc_valence", "eval_ccc_arousal"} <= set(after.report("eval"))


def test_fusion_task_fits_feature_windows():
    rng = np.random.default_rng(0)
    labels = [ANGRY, HAPPY] * 8
    centres = {ANGRY: rng.normal(size=16), HAPPY: rng.normal(size=16)}
    table = pd.DataFrame({
        "face_features": [list(np.stack([centres[y] + 0.1 * rng.normal(size=16)] * 3))
                          for y in labels],
        "face_mask": [[True, True, False]] * 16,
        "voice_features": [list(rng.normal(size=(1, 8))) for _ in labels],
        "voice_mask": [i % 2 == 0 for i in range(16)],
        "speaking": [0.5] * 16,
        **_targets(labels)})
    first, last, built = _fit("fusion", table, {"face_dim": 16, "voice_dim": 8,
                                                "modality_dropout": 0.0}, steps=30)
    assert last < first * 0.3
    assert evaluate_model(TASKS["fusion"], built, table).report("eval")["eval_accuracy"] == 1.0


def test_temporal_task_flattens_steps_in_order():
    rng = np.random.default_rng(1)
    lengths = [5, 3, 4]
    features, labels, valence = [], [], []
    for n in lengths:
        steps = rng.integers(0, 2, n)
        features.append(list(np.stack([np.full(8, 1.0 if s else -1.0) + 0.1 * rng.normal(size=8)
                                       for s in steps])))
        labels.append([HAPPY if s else ANGRY for s in steps])
        valence.append([0.6 if s else -0.6 for s in steps])
    table = pd.DataFrame({"features": features, "label": labels, "valence": valence,
                          "arousal": [[math.nan] * n for n in lengths]})
    first, last, built = _fit("temporal", table, {"input_dim": 8, "hidden_dim": 16,
                                                  "num_layers": 1}, steps=40)
    assert last < first * 0.5
    predictions = evaluate_model(TASKS["temporal"], built, table, batch_size=2)
    # one row per window, clip by clip in time order
    assert len(predictions.labels) == sum(lengths)
    assert list(predictions.labels) == [y for clip in labels for y in clip]
    report = predictions.report("eval")
    assert report["eval_accuracy"] == 1.0 and report["eval_ccc_valence"] > 0.5
    assert "eval_ccc_arousal" not in report  # no arousal labels: left out, not NaN


@pytest.mark.parametrize(("scheme", "kind"), [("majority", "cross_entropy"),
                                              ("multilabel", "multilabel_bce"),
                                              ("probability", "label_draw"),
                                              ("crossentropy", "soft_cross_entropy")])
def test_each_ferplus_scheme_has_its_loss(scheme, kind):
    source = {"format": "ferplus", "uri": "votes.csv", "fer2013_uri": "fer.csv",
              "ferplus_scheme": scheme}
    job = TrainJobConfig.model_validate({"task": "face", "data": {"train": source,
                                                                  "val": source}})
    assert loss_kind(job, pd.DataFrame()) == kind


def test_probability_scheme_trains_on_labels_drawn_from_the_votes():
    source = {"format": "ferplus", "uri": "votes.csv", "fer2013_uri": "fer.csv",
              "ferplus_scheme": "probability"}
    job = TrainJobConfig.model_validate({"task": "face", "data": {"train": source,
                                                                  "val": source}})
    votes = torch.zeros(400, 7)
    votes[:, HAPPY], votes[:, ANGRY] = 0.75, 0.25
    logits = torch.zeros(400, 7, requires_grad=True)
    batch = {"label": torch.full((400,), HAPPY), "vote_dist": votes,
             "label_dist": torch.full((400, 7), math.nan)}
    drawn = compute_loss("label_draw", Outputs(logits, None, None), batch, None, job,
                         torch.Generator().manual_seed(0))
    drawn.backward()
    # mean CE at zero logits: d/d logit_angry summed over rows = 1/7 - share drawn angry
    angry_share = 1 / 7 - float(logits.grad[:, ANGRY].sum())
    assert 0.18 < angry_share < 0.32  # ~ the votes' 25 %, not the plurality's 0 %
    plurality = compute_loss("label_draw", Outputs(torch.zeros(400, 7), None, None), batch,
                             None, job, None)
    assert float(plurality) == pytest.approx(math.log(7))  # validation: the plurality label


def test_schedules():
    cosine = _schedule(_job("face", epochs=10, lr=1.0, schedule={"name": "cosine",
                                                                 "min_lr": 0.1}))
    assert cosine(0) == pytest.approx(1.0) and cosine(5) == pytest.approx(0.55)
    step = _schedule(_job("face", epochs=10, schedule={"name": "step", "step_epochs": 3,
                                                      "gamma": 0.5, "warmup_epochs": 1}))
    assert [step(e) for e in range(5)] == [0.5, 1.0, 1.0, 1.0, 0.5]
