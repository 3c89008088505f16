"""MLflow: run tracking for jobs and resolution of model URIs to local files."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
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
    config: TrackingConfig, run_name: str, params: Mapping[str, Any]
) -> Iterator[str]:
    """Open an MLflow run (or, tracking disabled, just an id) and yield its run id.

    A failure inside the block marks the run FAILED and re-raises.
    """
    if not config.enabled:
        yield uuid.uuid4().hex
        return
    mlflow.set_tracking_uri(config.resolved_uri())
    with mlflow.start_run(experiment_id=_experiment_id(config), run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(params).items()})
        yield run.info.run_id


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
