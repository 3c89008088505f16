"""MLflow model registry: log a trained emoray checkpoint as a model with a signature,
register it, and move an alias only to a better version.

A logged model is an MLflow ``pyfunc`` whose one artifact is the emoray checkpoint
(``artifacts/<file>.pt``), so:

* ``mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(...)`` serves it (input and
  output described by the signature: face crops uint8 (N, H, W, 3) → probabilities (N, 7);
  voice windows float32 (N, samples) → probabilities; fusion/temporal: named arrays), and
* :func:`infra.tracking.resolve_model_file` still finds exactly one ``.pt`` in the version's
  artifacts, which is what the timeline job's ``--face-model models:/NAME@ALIAS`` and
  ``voice_model``/``fusion_model`` load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient

from models import face_emotion, fusion, temporal, voice_emotion
from models.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint"

# Requirements written next to the model: emoray itself (the pyfunc wrapper imports it) and
# the pinned torch; listing them skips MLflow's slow requirement inference.
PIP_REQUIREMENTS = ["emoray", "torch", "numpy", "pandas"]


def task_of(arch: str) -> str:
    """The training task (face, voice, fusion, temporal) of a checkpoint architecture."""
    if arch in face_emotion.ARCHITECTURES:
        return "face"
    if arch == voice_emotion.model.ARCH:
        return "voice"
    if arch in fusion.model.ARCHS:
        return "fusion"
    if arch == temporal.model.ARCH:
        return "temporal"
    raise ValueError(f"unknown model architecture {arch!r}")


class CheckpointModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of an emoray checkpoint (CPU); ``predict`` returns class
    probabilities (N, 7) in ``operators.schema.EMOTIONS`` order (temporal: (B, L, 7))."""

    def load_context(self, context):
        path = Path(context.artifacts[CHECKPOINT_ARTIFACT])
        self.task = task_of(load_checkpoint(path).arch)
        loader = {"face": face_emotion.load, "voice": voice_emotion.load,
                  "fusion": fusion.load, "temporal": temporal.load}[self.task]
        self.model = loader(path)

    # model_input: an array, or a dict of named arrays (fusion, temporal) per the signature.
    def predict(self, context, model_input: np.ndarray, params=None):
        if self.task == "face":
            crops = _single(model_input, "face_crops")
            return face_emotion.predict(self.model, np.asarray(crops, np.uint8))[0]
        if self.task == "voice":
            waveforms = _single(model_input, "waveform_16khz")
            return voice_emotion.predict(self.model, np.asarray(waveforms, np.float32)).probs
        if self.task == "fusion":
            return fusion.predict(self.model, model_input["face_feats"],
                                  model_input["face_mask"], model_input["voice_feats"],
                                  model_input["voice_mask"], model_input["speaking"]).probs
        return temporal.predict(self.model, model_input["features"],
                                model_input.get("lengths")).probs


def _single(model_input: Any, name: str) -> Any:
    """The one input array: MLflow hands named tensor inputs over as ``{name: array}``."""
    return model_input[name] if isinstance(model_input, dict) else model_input


def log_checkpoint_model(checkpoint: Path, signature: ModelSignature,
                         registered_name: str | None) -> tuple[str, str | None]:
    """Log ``checkpoint`` as the active run's pyfunc model ``model`` with ``signature`` and,
    with ``registered_name``, register it as a new version.

    Returns (the logged model's URI, the new version number or None).  Raises RuntimeError
    without an active run."""
    if mlflow.active_run() is None:
        raise RuntimeError("log_checkpoint_model needs an active MLflow run")
    info = mlflow.pyfunc.log_model(
        name="model", python_model=str(Path(__file__).with_name("mlflow_model.py")),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)}, signature=signature,
        pip_requirements=PIP_REQUIREMENTS, registered_model_name=registered_name)
    version = None if info.registered_model_version is None else str(
        info.registered_model_version)
    if version is not None:
        logger.info("registered %s version %s (%s)", registered_name, version, info.model_uri)
    return info.model_uri, version


def alias_holder(name: str, alias: str) -> str | None:
    """The version number holding ``alias`` of registered model ``name``, or None (no such
    alias or no such model yet)."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@dataclass(frozen=True)
class Promotion:
    """The outcome of :func:`promote_if_better`, as logged."""

    alias: str
    version: str
    score: float
    holder_version: str | None
    holder_score: float | None
    promoted: bool

    def message(self, metric: str) -> str:
        if self.holder_version is None:
            return (f"promoted version {self.version} to @{self.alias}: no holder "
                    f"({metric} {self.score:.4f})")
        verb = "promoted" if self.promoted else "NOT promoted"
        return (f"{verb} version {self.version} to @{self.alias}: {metric} {self.score:.4f} "
                f"vs holder version {self.holder_version} {self.holder_score:.4f}")


def promote_if_better(name: str, alias: str, version: str, score: float,
                      holder_score: float | None, holder_version: str | None,
                      mode: str = "max") -> Promotion:
    """Point ``alias`` at ``version`` when it strictly beats the current holder's score on
    the same data (``mode`` max: higher is better), or when there is no holder.  Records the
    decision as tags on the active run (if any)."""
    if holder_version is not None and holder_score is None:
        raise ValueError("a holder needs its score")
    better = holder_score is None or (score > holder_score if mode == "max"
                                      else score < holder_score)
    if better:
        MlflowClient().set_registered_model_alias(name, alias, version)
    promotion = Promotion(alias, version, score, holder_version, holder_score, better)
    if mlflow.active_run() is not None:
        mlflow.set_tags({
            "promotion.alias": alias, "promotion.promoted": str(better).lower(),
            "promotion.score": f"{score:.6f}",
            "promotion.holder_version": holder_version or "",
            "promotion.holder_score": "" if holder_score is None else f"{holder_score:.6f}"})
    return promotion
