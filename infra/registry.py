"""MLflow model registry: log a trained emoray checkpoint as a model with a signature,
register it, and move an alias only to a better version; and the terms each model file states.

A logged model is an MLflow ``pyfunc`` whose one artifact is the emoray checkpoint
(``artifacts/<file>.pt``) and whose code travels with it (``code/``: the sources of the
``models`` and ``operators`` packages and of this module), with requirements pinned to
packages an index serves (:func:`model_requirements`), so:

* ``mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(...)`` serves it in any Python
  environment holding those requirements, emoray installed or not (input and output
  described by the signature: face crops uint8 (N, H, W, 3) → probabilities (N, 7); voice
  windows float32 (N, samples) → probabilities; fusion/temporal: named arrays), and
* :func:`infra.tracking.resolve_model_file` still finds exactly one ``.pt`` in the version's
  artifacts, which is what the timeline job's ``--face-model models:/NAME@ALIAS`` and
  ``voice_model``/``fusion_model`` load.

Models logged before their code travelled with them list the requirement ``emoray``, which
no package index has; :func:`load_registered_model` refuses them with a message naming them.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient

import models
import operators
from models import face_emotion, fusion, temporal, voice_emotion
from models.checkpoint import TORCHSCRIPT_META, is_torchscript, load_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint"

# The distributions the model's code imports: mlflow (the pyfunc wrapper, this module),
# models/ (torch trio, numpy), operators/ (the schema: pyarrow; for the voice features,
# operators/audio: pydantic, ffmpeg-python) and pandas (pyfunc's inputs).  emoray itself is
# not one: its code travels in the model (stage_model_code).  Listing them also skips
# MLflow's slow requirement inference.
MODEL_DISTRIBUTIONS = ("mlflow", "torch", "torchvision", "torchaudio", "numpy", "pandas",
                       "pyarrow", "pydantic", "ffmpeg-python")


def model_requirements() -> list[str]:
    """The logged model's pip requirements: :data:`MODEL_DISTRIBUTIONS` pinned to the versions
    installed here, without local version labels (``2.11.0+cu130``), which indexes do not
    serve."""
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}"
            for name in MODEL_DISTRIBUTIONS]


def _not_python(directory: str, names: list[str]) -> set[str]:
    """``shutil.copytree`` filter: keep sub-packages and ``.py`` files only."""
    return {name for name in names if name == "__pycache__" or (
        not name.endswith(".py") and (Path(directory) / name).is_file())}


def stage_model_code(dest: Path) -> list[Path]:
    """Copy the Python sources a logged model runs into ``dest`` and return the paths to hand
    MLflow as ``code_paths``: the ``models`` and ``operators`` packages whole (a new import
    between their modules keeps working in registered models) and, of ``infra``, only this
    module (the pyfunc wrapper; the rest of infra is the platform the model never touches).

    Sources only: weights, figures and cards stay behind, so the model's checkpoint stays the
    one ``.pt`` of its artifacts."""
    paths = []
    for package in (models, operators):
        source = Path(package.__file__).parent
        shutil.copytree(source, dest / source.name, ignore=_not_python)
        paths.append(dest / source.name)
    infra_dir = dest / "infra"
    infra_dir.mkdir()
    here = Path(__file__)
    for module in (here.with_name("__init__.py"), here):
        shutil.copy(module, infra_dir / module.name)
    paths.append(infra_dir)
    return paths


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
    with tempfile.TemporaryDirectory(prefix="emoray-model-code-") as staging:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)}, signature=signature,
            code_paths=[str(p) for p in stage_model_code(Path(staging))],
            pip_requirements=model_requirements(), registered_model_name=registered_name)
    version = None if info.registered_model_version is None else str(
        info.registered_model_version)
    if version is not None:
        logger.info("registered %s version %s (%s)", registered_name, version, info.model_uri)
    return info.model_uri, version


def load_registered_model(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """``mlflow.pyfunc.load_model(model_uri)`` after checking that the model's code travels
    with it.  Raises ValueError naming ``model_uri`` for a model logged without code (its
    requirement ``emoray`` resolves nowhere and its wrapper imports this checkout)."""
    flavor = mlflow.models.get_model_info(model_uri).flavors.get("python_function", {})
    if not flavor.get("code"):
        raise ValueError(
            f"{model_uri} was logged without its code (no code/ folder in the model; it "
            "requires the package 'emoray', which no package index has), so it loads only "
            "where emoray is installed: log its checkpoint again with "
            "infra.registry.log_checkpoint_model (emoray train does)")
    return mlflow.pyfunc.load_model(model_uri)


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


# Metadata keys of the shipped files and of emoray's own save(): the weights' licence and the
# data they were trained on (models/face_emotion/convert.py writes the first of each pair).
_LICENCE_KEYS = ("weights_licence", "licence")
_DATA_KEYS = ("training_data", "data")


def _file_metadata(path: Path) -> dict[str, Any]:
    """The free-form metadata of a checkpoint or of a TorchScript export ({} without any)."""
    if is_torchscript(path):
        extra = {TORCHSCRIPT_META: ""}
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        try:
            meta = json.loads(extra[TORCHSCRIPT_META] or "{}")
        except json.JSONDecodeError:
            return {}
        return meta.get("metadata", {}) if isinstance(meta, dict) else {}
    return dict(load_checkpoint(path).metadata)


def licence_line(role: str, name: str, path: Path) -> str:
    """One log line with the terms of the ``role`` model ``name`` loaded from ``path``, as the
    file's metadata states them: the weights' licence and what they were trained on.  A file
    that states no licence (a custom model) gets "licence: as given by its provider"."""
    meta = _file_metadata(path)
    licence = next((str(meta[k]) for k in _LICENCE_KEYS if meta.get(k)), None)
    data = next((str(meta[k]) for k in _DATA_KEYS if meta.get(k)), None)
    if licence is None:
        line = f"{role} model {name}: licence: as given by its provider (its file states none)"
    else:
        line = f"{role} model {name}: licence: {licence}"
    return line if data is None else f"{line}; trained on: {data}"
