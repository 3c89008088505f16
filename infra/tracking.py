"""MLflow: run tracking for jobs and resolution of model URIs to local files."""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_DIR = "mlruns"
MLFLOW_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class TrackingConfig(BaseModel):
    """Where runs are tracked.  Default: a local sqlite store under ``./mlruns`` (open it with
    ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    uri: str | None = None
    experiment: str = "emoray-timeline"

    def resolved_uri(self) -> str:
        if self.uri:
            return self.uri
        Path(DEFAULT_TRACKING_DIR).mkdir(exist_ok=True)
        return f"sqlite:///{DEFAULT_TRACKING_DIR}/mlflow.db"


def _experiment_id(config: TrackingConfig) -> str:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if not config.uri:  # embedded store: keep artifacts beside the database, not in cwd
        artifact_location = (Path(DEFAULT_TRACKING_DIR) / "artifacts").resolve().as_uri()
    return client.create_experiment(config.experiment, artifact_location=artifact_location)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → ``{"a.b": value}`` for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@contextlib.contextmanager
def tracked_run(
    config: TrackingConfig, run_name: str, params: Mapping[str, Any],
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """Open an MLflow run (or, tracking disabled, just an id) and yield its run id.

    ``resume_run_id`` re-opens that run (a restarted job continuing its run) instead of
    starting one; its params are not logged again (MLflow params are immutable).  A failure
    inside the block marks the run FAILED and re-raises.
    """
    if not config.enabled:
        yield resume_run_id or uuid.uuid4().hex
        return
    mlflow.set_tracking_uri(config.resolved_uri())
    if resume_run_id is not None:
        with mlflow.start_run(run_id=resume_run_id) as run:
            yield run.info.run_id
        return
    with mlflow.start_run(experiment_id=_experiment_id(config), run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(params).items()})
        yield run.info.run_id


def absolute_uri(config: TrackingConfig) -> str:
    """The tracking URI with a relative sqlite path made absolute, so other processes (Ray
    workers, whose working directory differs) reach the same store."""
    uri = config.resolved_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def log_epoch_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, float],
                      step: int) -> None:
    """Log one epoch's metrics to ``run_id`` from any process (a training worker), at
    ``step``.  A tracking outage is logged, not raised: it must not kill a training run
    (the final report is logged by the driver again)."""
    timestamp = int(time.time() * 1000)
    batch = [Metric(name, float(value), timestamp, step) for name, value in metrics.items()
             if value is not None and math.isfinite(float(value))]
    try:
        MlflowClient(tracking_uri).log_batch(run_id, metrics=batch)
    except (MlflowException, OSError) as exc:
        logger.warning("could not log epoch %d metrics to MLflow run %s: %s", step, run_id, exc)


def log_job_results(metrics: Mapping[str, float], tables: Mapping[str, pd.DataFrame]) -> None:
    """Log metrics and tables (Parquet artifacts) to the active run, if any."""
    if mlflow.active_run() is None:
        return
    mlflow.log_metrics(dict(metrics))
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in tables.items():
            path = Path(tmp) / f"{name}.parquet"
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path))


def is_mlflow_uri(source: str) -> bool:
    return source.startswith(MLFLOW_URI_SCHEMES)


def resolve_model_file(source: str, config: TrackingConfig, dest: Path) -> Path:
    """A local model file for ``source``: a path as is, or an MLflow URI downloaded to ``dest``.

    An MLflow artifact directory must hold exactly one ``.pt`` file (our checkpoint format).
    """
    if not is_mlflow_uri(source):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"model file {source!r} does not exist")
        return path
    mlflow.set_tracking_uri(config.resolved_uri())
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest)))
    if local.is_file():
        return local
    candidates = sorted(local.rglob("*.pt"))
    if len(candidates) != 1:
        raise ValueError(
            f"{source} holds {len(candidates)} .pt files ({[c.name for c in candidates]}); "
            "expected exactly one emoray checkpoint"
        )
    return candidates[0]
