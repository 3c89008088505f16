"""infra.registry on a real sqlite MLflow store: a checkpoint logged as a pyfunc model with a
signature and registered, served by MLflow with the same probabilities as models/, resolved
back to its one ``.pt``, and an alias that moves only to a strictly better score."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from skimage.data import astronaut

from infra.registry import alias_holder, log_checkpoint_model, promote_if_better
from infra.tracking import TrackingConfig, resolve_model_file
from models import face_emotion
from operators.schema import EMOTIONS
from pipelines.train_model.build import signature_for


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("registry-test")
    yield uri
    mlflow.set_tracking_uri(None)


def test_log_register_serve_and_resolve(store, tmp_path):
    path = tmp_path / "fer.pt"
    face_emotion.save(face_emotion.load(), path)
    with mlflow.start_run():
        model_uri, version = log_checkpoint_model(path, signature_for("face", {}), "faces")
    assert version == "1" and model_uri.startswith("models:/")
    crop = np.ascontiguousarray(astronaut()[62:172, 169:279])[None]  # her face, 110 px
    served = mlflow.pyfunc.load_model("models:/faces/1").predict(crop)
    expected = face_emotion.predict(face_emotion.load(), crop)[0]
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert served[0].argmax() == EMOTIONS.index("happy")
    local = resolve_model_file("models:/faces/1", TrackingConfig(uri=store), tmp_path / "dl")
    assert local.suffix == ".pt" and local.read_bytes() == path.read_bytes()


def test_alias_moves_only_to_a_better_score(store, tmp_path):
    path = tmp_path / "m.pt"
    face_emotion.save(face_emotion.build("mini-xception", seed=0), path)
    with mlflow.start_run():
        versions = [log_checkpoint_model(path, signature_for("face", {}), "m")[1]
                    for _ in range(3)]
    assert alias_holder("m", "champion") is None
    first = promote_if_better("m", "champion", versions[0], 0.5, None, None)
    assert first.promoted and alias_holder("m", "champion") == versions[0]
    with mlflow.start_run() as run:
        worse = promote_if_better("m", "champion", versions[1], 0.4, 0.5, versions[0])
    assert not worse.promoted and alias_holder("m", "champion") == versions[0]
    tags = MlflowClient(store).get_run(run.info.run_id).data.tags
    assert tags["promotion.promoted"] == "false" and tags["promotion.holder_score"] == "0.500000"
    assert "NOT promoted" in worse.message("val_macro_f1")
    tie = promote_if_better("m", "champion", versions[1], 0.5, 0.5, versions[0])
    assert not tie.promoted  # it must beat the holder, not equal it
    better = promote_if_better("m", "champion", versions[2], 0.6, 0.5, versions[0])
    assert better.promoted and alias_holder("m", "champion") == versions[2]
    lower_is_better = promote_if_better("m", "champion", versions[1], 0.3, 0.4, versions[2],
                                        mode="min")
    assert lower_is_better.promoted
