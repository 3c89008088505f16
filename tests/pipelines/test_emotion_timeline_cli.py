"""The ``emoray run`` command: local files, a local sqlite MLflow store, a face model taken
from the MLflow model registry by alias, the face-only opt-out, and clear errors for bad
arguments."""

from __future__ import annotations

import logging
import shutil

import duckdb
import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from models import face_emotion
from operators import schema as S
from pipelines.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def registered_sad_model(tmp_path):
    """The default network with its 'sad' logit pushed up, registered as face-emotion@champion
    in a fresh sqlite MLflow store.  Returns the tracking URI."""
    model = face_emotion.load()
    with torch.no_grad():
        model.module.net.classifier.bias[S.EMOTIONS.index("sad")] += 20.0
    checkpoint = tmp_path / "sad.pt"
    face_emotion.save(model, checkpoint, metadata={"name": "sad-biased"})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("models", (tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(checkpoint), artifact_path="face_model")
    client = MlflowClient(uri)
    client.create_registered_model("face-emotion")
    version = client.create_model_version(
        "face-emotion", source=f"{run.info.artifact_uri}/face_model", run_id=run.info.run_id)
    client.set_registered_model_alias("face-emotion", "champion", version.version)
    return uri


def test_cli_runs_with_a_registry_model(media, ray_local, tmp_path, registered_sad_model, caplog):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in ("face_speech", "no_face"):
        shutil.copy(media[case], inputs)
    out = tmp_path / "out"
    caplog.set_level(logging.INFO)
    code = main(["run", str(inputs), "--out", str(out), "--tracking-uri", registered_sad_model,
                 "--face-model", "models:/face-emotion@champion", "--fusion", "face_only",
                 "--set", "decode.sample_fps=2"])
    assert code == 0
    clips = pd.read_parquet(out / "clips")
    face = clips[clips[S.URI].str.endswith("face_speech.mp4")].iloc[0]
    assert face[S.DOMINANT_EMOTION] == "sad"  # the registry's model was used, not the default
    assert face[S.FACE_MODEL] == "sad-biased (models:/face-emotion@champion)"
    assert face[S.FRAMES_SAMPLED] == pytest.approx(2 * face[S.DURATION_S], abs=1)
    # --fusion face_only: no voice model ran, though the voice features are there
    timelines = pd.read_parquet(out / "timelines")
    spoken = timelines[timelines[S.SPEECH_PRESENT].fillna(False).astype(bool)]
    assert len(spoken) and (spoken[S.FUSION_MODE].dropna() == "face_only").all()
    assert (timelines[S.VA_SOURCE].dropna() == "circumplex_from_face_probs").all()
    faceless = timelines[timelines[S.URI].str.endswith("no_face.mp4")]
    assert faceless[S.FUSION_MODE].isna().all() and faceless["p_happy"].isna().all()
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("clips: 2 (")]
    assert summary and "ok=1" in summary[0] and "no_face=1" in summary[0]
    # Analysts open the outputs with DuckDB as well as pandas.
    sad_windows = duckdb.sql(
        f"SELECT count(*) FROM '{out}/timelines/*.parquet' WHERE dominant_emotion = 'sad'"
    ).fetchall()[0][0]
    assert sad_windows > 0
    runs = MlflowClient(registered_sad_model).search_runs(
        [mlflow.get_experiment_by_name("emoray-timeline").experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["clips"] == 2


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "/nonexistent/folder", "--out", "x"], "does not exist"),
    (["run", ".", "--out", "x", "--set", "decode.sample_fps=-1"], "greater than 0"),
    (["run", ".", "--out", "x", "--face-model", "/missing/model.pt"], "does not exist"),
    (["run", ".", "--out", "x", "--voice-model", "/missing/voice.pt"], "does not exist"),
    (["run", ".", "--out", "x", "--fusion", "face_only", "--voice-model", "v.pt"],
     "face_only runs no voice model"),
])
def test_cli_bad_arguments_exit_2_with_a_reason(argv, message, caplog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.mp4").write_bytes(b"")
    assert main([*argv, "--set", "tracking.enabled=false"]) == 2
    assert any(message in r.getMessage() for r in caplog.records)
