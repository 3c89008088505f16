"""The timeline job logs the terms of every model it loads, one INFO line per model, once
per run (``resolve_models`` runs once per run of ``emoray run`` and ``emoray nightly``):
the shipped weights' licences and training data, and for a model the user gives, what its
file states or "as given by its provider"."""

from __future__ import annotations

import logging

import pytest

from models import face_emotion, fusion, voice_emotion
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import resolve_models


def licence_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.INFO and "licence:" in r.getMessage()]


def test_default_models_log_their_licences(caplog, tmp_path):
    with caplog.at_level(logging.INFO):
        resolve_models(load_config(None, []), tmp_path)
    face, voice = licence_lines(caplog)
    assert face.startswith("face model fer2013-mini-xception: licence: MIT")
    assert "FER2013 (research use, no open licence)" in face
    assert voice.startswith("voice model ravdess-voice-cnn: licence: CC BY-NC-SA 4.0")


def test_face_only_logs_the_face_model_alone(caplog, tmp_path):
    with caplog.at_level(logging.INFO):
        resolve_models(load_config(None, ["fusion=face_only"]), tmp_path)
    assert [line.split(":")[0] for line in licence_lines(caplog)] == [
        "face model fer2013-mini-xception"]


def test_user_models_log_what_their_files_state(caplog, tmp_path):
    face_path, voice_path, fusion_path = (tmp_path / n for n in ("f.pt", "v.pt", "u.pt"))
    face_emotion.save(face_emotion.build("mini-xception", seed=0), face_path)
    voice = voice_emotion.build(seed=0)
    voice_emotion.save(voice, voice_path, metadata={"licence": "CC BY 4.0"})
    fused = fusion.build("attention-bilinear",
                         {"face_dim": face_emotion.load().feature_dim,
                          "voice_dim": voice.config.embed_dim}, seed=0)
    fusion.save(fused, fusion_path)
    overrides = [f"face_model={face_path}", f"voice_model={voice_path}",
                 f"fusion_model={fusion_path}"]
    with caplog.at_level(logging.INFO):
        resolve_models(load_config(None, overrides), tmp_path / "scratch")
    face, voice_line, fusion_line = licence_lines(caplog)
    assert face.startswith("face model ") and str(face_path) in face
    assert face.endswith("licence: as given by its provider (its file states none)")
    assert voice_line.startswith("voice model ") and voice_line.endswith("licence: CC BY 4.0")
    assert fusion_line.startswith("fusion model ")
    assert "as given by its provider" in fusion_line
