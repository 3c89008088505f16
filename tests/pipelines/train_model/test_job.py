"""``emoray train`` end to end: a 2-worker CPU TorchTrainer on a real local Ray learns a small
face corpus, survives a killed worker by resuming from its last epoch checkpoint when the job
is started again, is tracked and registered on a real ``mlflow server``, is promoted over a
weaker alias holder (and a worse model is refused), ``emoray evaluate`` prints its report, and
the timeline job then uses it by alias.

The corpus (``face_folders`` in tests/fixtures/corpora.py) has five real faces, jittered crops
per class; the astronaut — the participant of sample_media's recordings — is labelled neutral,
which the shipped FER2013 network calls happy.  Chance is 1/5.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml
from mlflow import MlflowClient

from infra.registry import alias_holder, log_checkpoint_model
from infra.tracking import TrackingConfig, resolve_model_file
from models import face_emotion
from operators import schema as S
from pipelines.cli import main
from pipelines.train.corpora.parquet import read_prepared
from pipelines.train_model.build import (
    evaluate_checkpoint,
    promote_version,
    run_dir,
    signature_for,
)
from pipelines.train_model.config import load_train_config

pytestmark = pytest.mark.integration

MODEL_NAME = "face-fixture"
EPOCHS = 10
KILL_AFTER_EPOCH = 2  # 0-based: the worker dies once this epoch's checkpoint exists


def _config(tmp: Path, folders: Path, tracking_uri: str) -> Path:
    config = {
        "task": "face",
        "run_name": "fixture-faces",
        "storage_path": str(tmp / "checkpoints"),
        "data": {"train": {"format": "folders", "uri": str(folders), "split": "train"},
                 "val": {"format": "folders", "uri": str(folders), "split": "val"}},
        "model": {"arch": "mini-xception", "init": "default"},
        "train": {"epochs": EPOCHS, "batch_size": 16, "lr": 0.003,
                  "early_stopping": {"metric": "val_macro_f1", "patience": None}},
        # Half a CPU each: both workers fit beside the test's Ray (2 CPUs) and the controller.
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5, "max_failures": 0},
        "tracking": {"uri": tracking_uri, "experiment": "emoray-train-test"},
        "register": {"name": MODEL_NAME},
    }
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _checkpoint_epochs(folder: str) -> list[int]:
    epochs = []
    for state in glob.glob(f"{folder}/checkpoint_*/state.pt"):
        try:
            epochs.append(int(torch.load(state, weights_only=True)["epoch"]))
        except (RuntimeError, EOFError, OSError):
            continue  # being written right now
    return epochs


def _kill_a_worker_after(folder: str, epoch: int, done: threading.Event,
                         killed: list[int]) -> None:
    """SIGKILL one Ray Train worker process once the checkpoint of ``epoch`` is on disk.

    Only this test's own Ray is searched: its processes descend from this process (the
    session fixture's ``ray.init`` started them), whatever else runs on the machine."""
    while not done.is_set():
        if max(_checkpoint_epochs(folder), default=-1) >= epoch:
            for proc in psutil.Process(os.getpid()).children(recursive=True):
                try:
                    if "RayTrainWorker" in " ".join(proc.cmdline()):
                        proc.send_signal(signal.SIGKILL)
                        killed.append(proc.pid)
                        return
                except psutil.NoSuchProcess:
                    continue
        time.sleep(0.05)


@pytest.fixture(scope="module")
def holder(mlflow_server, tmp_path_factory) -> str:
    """The shipped FER2013 network registered as MODEL_NAME version 1 @champion: the model a
    team starts from.  It calls the neutral-labelled participant happy."""
    tmp = tmp_path_factory.mktemp("holder")
    path = tmp / "fer2013.pt"
    face_emotion.save(face_emotion.load(), path, {"name": "fer2013-default"})
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("emoray-train-test")
    with mlflow.start_run(run_name="holder"):
        _, version = log_checkpoint_model(path, signature_for("face", {}), MODEL_NAME)
    MlflowClient(mlflow_server).set_registered_model_alias(MODEL_NAME, "champion", version)
    return str(version)


def _train_killing_a_worker(argv: list[str], folder: str, after_epoch: int
                            ) -> tuple[int, list[int], float]:
    """Run ``emoray train`` while a thread kills a worker after ``after_epoch``: (exit code,
    killed pids, seconds)."""
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_worker_after,
                              args=(folder, after_epoch, done, killed), daemon=True)
    started = time.perf_counter()
    killer.start()
    try:
        code = main(argv)
    finally:
        done.set()
        killer.join()
    return code, killed, time.perf_counter() - started


@pytest.fixture(scope="module")
def trained(ray_local, mlflow_server, face_folders, holder, tmp_path_factory, caplog_module):
    """1. Train with a worker killed after epoch KILL_AFTER_EPOCH; with max_failures 0 the
    job fails.  2. Run the same command again with ``--promote champion`` and
    ``scaling.max_failures=1``: it continues the run, a worker is killed once more, Ray
    Train restarts the worker group from the last checkpoint, and the run finishes."""
    tmp = tmp_path_factory.mktemp("train")
    config_path = _config(tmp, face_folders, mlflow_server)
    config = load_train_config(config_path)
    folder = run_dir(config)
    first, first_killed, first_seconds = _train_killing_a_worker(
        ["train", str(config_path)], folder, KILL_AFTER_EPOCH)
    assert _checkpoint_epochs(folder), f"the first job (exit {first}) wrote no checkpoint"
    reached = max(_checkpoint_epochs(folder))
    second, second_killed, second_seconds = _train_killing_a_worker(
        ["train", str(config_path), "--promote", "champion", "--set",
         "scaling.max_failures=1"], folder, reached + 2)
    return {"config": config, "folder": folder, "first": first, "second": second,
            "killed": [first_killed, second_killed], "reached": reached,
            "first_seconds": first_seconds, "second_seconds": second_seconds,
            "log": caplog_module.text}


@pytest.fixture(scope="module")
def caplog_module():
    """Log records of the module's training runs (pytest's caplog is per test)."""
    handler = _ListHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _final_state(folder: str) -> dict:
    latest = max(glob.glob(f"{folder}/checkpoint_*/state.pt"),
                 key=lambda p: torch.load(p, weights_only=True)["epoch"])
    return torch.load(latest, weights_only=True)


def test_killed_workers_and_a_restarted_job_continue_from_the_last_epoch(trained):
    assert all(trained["killed"]), "no training worker was found to kill"
    assert trained["first"] == 1  # the failed job says so (and how to continue)
    assert trained["second"] == 0  # the restarted job survived its killed worker
    history = _final_state(trained["folder"])["history"]
    # Every epoch exactly once, in order: nothing started again from 0 ...
    assert [int(h["epoch"]) for h in history] == list(range(EPOCHS))
    # ... each worker group began after the last checkpoint Ray Train had registered: for
    # the restarted job at most the last one on disk (registration trails the upload).
    firsts = [int(h["session_first_epoch"]) for h in history]
    starts = sorted(set(firsts))
    assert len(starts) == 3, firsts  # first job, restarted job, its replaced worker group
    _, resumed, recovered = starts
    assert 1 <= resumed <= trained["reached"] + 1 and resumed < recovered < EPOCHS
    assert firsts == ([0] * resumed + [resumed] * (recovered - resumed)
                      + [recovered] * (EPOCHS - recovered))
    print(f"\nkilled job {trained['first_seconds']:.1f} s, resumed job "
          f"{trained['second_seconds']:.1f} s")


def test_the_model_learns_well_above_chance(trained, face_folders):
    config = trained["config"]
    val = read_prepared(f"{trained['folder']}/data/val")
    assert len(val) == 20 and sorted(val["label"].unique()) == [0, 1, 3, 5, 6]
    trained_model = Path(trained["folder"]) / "model" / "face_fixture-faces.pt"
    learnt = evaluate_checkpoint("face", trained_model, val).report("eval")
    default = face_emotion.model.DEFAULT_WEIGHTS
    before = evaluate_checkpoint("face", default, val).report("eval")
    # chance is 0.2; the FER2013 network starts below 0.8 (the participant is "happy")
    assert learnt["eval_accuracy"] >= 0.9
    assert before["eval_accuracy"] <= 0.8
    assert learnt["eval_macro_f1"] > before["eval_macro_f1"]
    assert config.train.epochs == EPOCHS


def test_mlflow_run_has_epochs_report_model_and_registry(trained, mlflow_server, holder):
    client = MlflowClient(mlflow_server)
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    new = max(versions, key=lambda v: int(v.version))
    assert int(new.version) == int(holder) + 1
    run = client.get_run(new.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["config.train.epochs"] == str(EPOCHS)
    assert run.data.tags["sys.workers"] == "2" and run.data.tags["sys.backend"] == "gloo"
    assert {"sys.python", "sys.torch", "sys.ray"} <= set(run.data.tags)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")]
    assert sorted(set(steps)) == list(range(EPOCHS))  # both jobs logged into one run
    assert run.data.metrics["eval_accuracy"] >= 0.9
    assert {"eval_f1_neutral", "eval_precision_happy", "eval_recall_angry",
            "eval_macro_f1"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert artifacts == {"evaluation/evaluation_report.csv", "evaluation/evaluation_report.md",
                         "evaluation/confusion_matrix.png"}
    table = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="evaluation/evaluation_report.csv",
        tracking_uri=mlflow_server), index_col=0)
    assert table.loc["accuracy", "f1"] == pytest.approx(run.data.metrics["eval_accuracy"])
    info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}/{new.version}")
    assert info.signature is not None
    assert tuple(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 7)
    # The registered version resolves to exactly one emoray checkpoint (what the timeline
    # job's --face-model loads) and the pyfunc serves the same probabilities.
    tracking = TrackingConfig(uri=mlflow_server)
    path = resolve_model_file(f"models:/{MODEL_NAME}@champion", tracking,
                              Path(trained["folder"]) / "resolved")
    model = face_emotion.load(path)
    crops = np.stack([np.asarray(read_image(b)) for b in read_prepared(
        f"{trained['folder']}/data/val")["image"][:3]])
    mlflow.set_tracking_uri(mlflow_server)
    served = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion").predict(crops)
    np.testing.assert_allclose(served, face_emotion.predict(model, crops)[0], atol=1e-5)


def read_image(data: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def test_promote_moves_to_a_better_model_and_refuses_a_worse_one(trained, mlflow_server,
                                                                  holder, tmp_path):
    client = MlflowClient(mlflow_server)
    champion = alias_holder(MODEL_NAME, "champion")
    assert champion == str(int(holder) + 1)  # beat the FER2013 holder, so the alias moved
    assert "promoted version" in trained["log"] and "vs holder version 1" in trained["log"]
    # A worse candidate: an untrained network, registered as a new version.
    worse = tmp_path / "untrained.pt"
    face_emotion.save(face_emotion.build("mini-xception", seed=3), worse)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("emoray-train-test")
    with mlflow.start_run(run_name="worse"):
        _, version = log_checkpoint_model(worse, signature_for("face", {}), MODEL_NAME)
    val = read_prepared(f"{trained['folder']}/data/val")
    moved = promote_version(trained["config"], "champion", version, val, tmp_path)
    assert moved is False
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == champion


def test_evaluate_prints_the_report_of_the_registered_model(trained, mlflow_server, face_folders,
                                                            capsys):
    code = main(["evaluate", f"models:/{MODEL_NAME}@champion", str(face_folders),
                 "--format", "folders", "--split", "val", "--tracking-uri", mlflow_server])
    assert code == 0
    out = capsys.readouterr().out
    assert "(face model)" in out and "20 samples" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for name in ("angry", "disgust", "happy", "surprise", "neutral"):
        assert len(lines[name]) == 5  # precision, recall, f1, support
    assert float(lines["accuracy"][-2]) >= 0.9
    assert lines["macro"][:2] == ["macro", "avg"]


def test_timeline_job_uses_the_model_by_alias(trained, mlflow_server, media, tmp_path):
    """The default model calls the participant happy (sample_media's ground truth, asserted
    by the timeline tests); the team's model, by alias, calls her neutral."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "face_speech.mp4").symlink_to(media["face_speech"])
    out = tmp_path / "out"
    code = main(["run", str(inputs), "--out", str(out), "--tracking-uri", mlflow_server,
                 "--face-model", f"models:/{MODEL_NAME}@champion",
                 "--set", "decode.sample_fps=1"])
    assert code == 0
    clip = pd.read_parquet(out / "clips").iloc[0]
    assert clip[S.DOMINANT_EMOTION] == "neutral"
    # The identity names the face model first, then the voice model and the fusion rule.
    assert clip[S.FACE_MODEL].startswith(f"{MODEL_NAME} (models:/{MODEL_NAME}@champion)")
    timeline = pd.read_parquet(out / "timelines")
    faces = timeline[timeline[S.FACE_PRESENT]]
    assert faces["p_neutral"].mean() > 0.5 > faces["p_happy"].mean()
