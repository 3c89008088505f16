"""Speaker-disjoint folds (``emoray train --folds K``), speaker statistics per subject in
training and evaluation, and ``emoray evaluate --per-utterance``.

The pure parts run without Ray; the end-to-end test trains a tiny speaker-normalised voice
network on the RAVDESS fixture (espeak-ng speech, actors 01, 02, 17, 18) in 2 folds of one
epoch on the session's local Ray, then evaluates the fold model per utterance from the CLI.
It checks plumbing and the fold bookkeeping, not accuracy (one epoch of four speakers).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipelines.cli import main
from pipelines.train.corpora.ravdess import ravdess_subject
from pipelines.train.media import load_audio
from pipelines.train_model.build import FoldResult, fold_metrics, fold_subjects, folds_table
from pipelines.train_model.config import load_train_config
from pipelines.train_model.tasks import SPEAKER_STATS, TASKS, RowDataset

TINY = {"channels": [8, 16, 32], "embed_dim": 32, "attention_dim": 16, "n_mels": 40,
        "hop_length": 320}


def test_ravdess_actors_make_five_folds_of_two_men_and_two_women():
    actors = [ravdess_subject(a) for a in range(20, 0, -1)]
    folds = fold_subjects(actors, 5)
    assert [len(f) for f in folds] == [4] * 5
    assert folds[0] == [ravdess_subject(a) for a in (1, 2, 3, 4)]
    assert folds[4] == [ravdess_subject(a) for a in (17, 18, 19, 20)]
    for fold in folds:  # RAVDESS: odd actors are male, even female
        assert sum(int(s.split(":")[1]) % 2 for s in fold) == 2
    assert sorted(s for f in folds for s in f) == sorted(actors)
    with pytest.raises(ValueError, match="at least 5 subjects"):
        fold_subjects(actors[:4], 5)


def test_fold_table_gives_mean_and_sample_sd():
    results = [FoldResult(k, [f"s{k}"], acc, f1, acc, [])
               for k, acc, f1 in ((1, 0.6, 0.5), (2, 0.7, 0.6), (3, 0.8, 0.7))]
    metrics = fold_metrics(results)
    assert metrics["cv_accuracy_mean"] == pytest.approx(0.7)
    assert metrics["cv_accuracy_sd"] == pytest.approx(0.1)  # ddof 1
    assert metrics["fold2_macro_f1"] == 0.6
    table = folds_table(results)
    assert "| 2 | s2 | 0.700 | 0.600 |" in table
    assert "| mean ± sd | | 0.700 ± 0.100 | 0.600 ± 0.100 |" in table


CANDIDATE = "pipelines/train_model/configs/voice_ravdess_speaker_norm.yaml"


def test_folds_take_validation_speakers_from_the_training_data(tmp_path):
    config = load_train_config(CANDIDATE)
    assert config.data.val is None and config.folds is None
    assert config.model.hparams["speaker_norm"] is True
    assert load_train_config(CANDIDATE, ["folds=5"]).folds == 5
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        load_train_config(CANDIDATE, ["folds=1"])


def test_each_subject_is_normalised_by_its_own_statistics(ravdess_root):
    files = sorted(ravdess_root.rglob("*.flac"))
    table = pd.DataFrame({
        "audio": [load_audio(str(f)) for f in files],
        "subject": [ravdess_subject(int(f.stem.split("-")[6])) for f in files],
        "label": 0, "label_dist": None, "vote_dist": None, "valence": math.nan,
        "arousal": math.nan})
    spec = TASKS["voice"]
    plain = spec.build(spec.default_arch, TINY, None, seed=0)
    assert SPEAKER_STATS not in RowDataset(table, spec, plain).table
    built = spec.build(spec.default_arch, {**TINY, "speaker_norm": True}, None, seed=0)
    rows = RowDataset(table, spec, built).table
    for subject, group in rows.groupby("subject"):
        windows = [w for audio in group["audio"] for w in _utterance_windows(audio)]
        with torch.no_grad():
            expected = built.module.speaker_stats(torch.from_numpy(np.stack(windows))).numpy()
        for stats in group[SPEAKER_STATS]:
            np.testing.assert_allclose(stats, expected, atol=1e-5, err_msg=subject)
    by_subject = {s: g[SPEAKER_STATS].iloc[0] for s, g in rows.groupby("subject")}
    assert np.abs(by_subject["ravdess:01"] - by_subject["ravdess:17"]).max() > 1e-3
    # Items carry them, and evaluation of a whole utterance uses them.
    item = RowDataset(table, spec, built)[0]
    assert item[SPEAKER_STATS].shape == (2, 40)


def _utterance_windows(audio: np.ndarray) -> list[np.ndarray]:
    size, hop = 16000, 8000
    if len(audio) <= size:
        return [np.pad(audio, (0, size - len(audio))).astype(np.float32)]
    return [audio[s:s + size].astype(np.float32) for s in range(0, len(audio) - size + 1, hop)]


@pytest.mark.integration
def test_two_folds_then_evaluate_per_utterance(ray_local, ravdess_root, tmp_path, capsys):
    config = {
        "task": "voice", "run_name": "fixture-folds", "storage_path": str(tmp_path / "runs"),
        "data": {"train": {"format": "ravdess", "uri": str(ravdess_root), "samples": "speech",
                           "va_targets": "circumplex"}},
        "model": {"hparams": {**TINY, "speaker_norm": True}},
        "train": {"epochs": 1, "batch_size": 2, "crops_per_sample": 2, "va_loss": "mse",
                  "early_stopping": {"metric": "val_accuracy", "patience": None}},
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5, "max_failures": 0},
        "tracking": {"enabled": False},
    }
    path = tmp_path / "folds.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "| 1 | ravdess:01, ravdess:02 |" in out and "| 2 | ravdess:17, ravdess:18 |" in out
    run = tmp_path / "runs" / "fixture-folds"
    folds = json.loads((run / "folds.json").read_text())
    assert [f["subjects"] for f in folds] == [["ravdess:01", "ravdess:02"],
                                             ["ravdess:17", "ravdess:18"]]
    for fold in folds:
        assert len(fold["history"]) == 1 and 0 <= fold["accuracy"] <= 1
        # Fold 1 validates actor 01's 2 clips and actor 02's 2 (one a song), fold 2 the 3
        # clips of actors 17 and 18: scored per utterance, one row per clip.
        assert fold["history"][0]["val_n"] == {"ravdess:01": 4, "ravdess:17": 3}[
            fold["subjects"][0]]
    assert (run / "folds.md").read_text().startswith("| fold | validation subjects |")

    # The fold model, evaluated per utterance from the CLI with per-actor normalisation.
    best = next((run / "fold2").glob("checkpoint_*/best.pt"))
    assert main(["evaluate", str(best), str(ravdess_root), "--format", "ravdess",
                 "--per-utterance"]) == 0
    out = capsys.readouterr().out
    assert "(voice model)" in out and ": 7 utterances" in out
    assert main(["evaluate", str(best), str(ravdess_root), "--format", "ravdess"]) == 0
    assert "utterances" not in capsys.readouterr().out


def test_per_utterance_is_for_voice_models(tmp_path, capsys):
    from models import face_emotion

    face_emotion.save(face_emotion.load(), tmp_path / "face.pt")
    assert main(["evaluate", str(tmp_path / "face.pt"), str(tmp_path), "--format", "ravdess",
                 "--per-utterance"]) == 2
    assert Path(tmp_path / "face.pt").is_file()
