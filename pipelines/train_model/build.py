"""The training job's flow, on one screen.

    config ─ prepare train/val (Ray Data → Parquet, once per run) ─ TorchTrainer (N workers,
    DDP, a checkpoint per epoch, early stopping) ─ best epoch's checkpoint ─ evaluate on val
    ─ MLflow: params, per-epoch metrics, system info, report (metrics, CSV/markdown table,
    confusion-matrix PNG), pyfunc model with signature ─ register ─ [promote alias if better]

``folds: K`` (``emoray train --folds K``) runs :func:`cross_validate` instead: the same recipe
on K speaker-disjoint folds, scored by each fold's last epoch (the fold table).

A run lives in ``storage_path/run_name``: the prepared data (``data/``), Ray Train's epoch
checkpoints and ``emoray_run.json`` (the MLflow run id), so starting the same config again
continues the same run from its last epoch (see ``TrainJobConfig``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import ray
import ray.train
import torch
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from ray.train.torch import TorchConfig, TorchTrainer

from infra import ray_cluster
from infra.registry import alias_holder, log_checkpoint_model, promote_if_better, task_of
from infra.tracking import absolute_uri, resolve_model_file, tracked_run
from models.checkpoint import load_checkpoint
from operators.io.files import StorageOptions, is_remote, join, open_fs
from operators.schema import EMOTIONS
from pipelines.train.corpora.parquet import read_prepared
from pipelines.train.metrics import classification_report, confusion_matrix, plot_confusion_matrix
from pipelines.train.table import SUBJECT
from pipelines.train_model.config import TrainJobConfig, config_json
from pipelines.train_model.loop import BEST_FILE, Predictions, evaluate_model, train_loop
from pipelines.train_model.prepare import prepare_source
from pipelines.train_model.tasks import TASKS, resolve_init

logger = logging.getLogger("emoray.train")

RUN_FILE = "emoray_run.json"


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    run_id: str
    checkpoint: str  # the best epoch's emoray checkpoint, kept in the run folder (model/)
    metrics: dict[str, float]  # the evaluation of that checkpoint on the validation set
    report: pd.DataFrame  # per-class precision/recall/F1/support, macro avg, accuracy
    history: list[dict[str, float]]  # per-epoch metrics, in epoch order
    model_uri: str | None
    version: str | None  # the registered version, None without register.name
    promoted: bool | None  # None without --promote


def run_dir(config: TrainJobConfig) -> str:
    storage = config.storage_path if is_remote(config.storage_path) else str(
        Path(config.storage_path).resolve())
    return join(storage, config.run_name)


def _read_state(uri: str, options: StorageOptions) -> dict[str, Any]:
    fs, path = open_fs(uri, options)
    if not fs.exists(path):
        return {}
    with fs.open(path, "r") as handle:
        return json.load(handle)


def _write_state(uri: str, options: StorageOptions, state: dict[str, Any]) -> None:
    fs, path = open_fs(uri, options)
    fs.makedirs(str(Path(path).parent), exist_ok=True)
    with fs.open(path, "w") as handle:
        json.dump(state, handle, indent=2)


def prepared_data(config: TrainJobConfig, folder: str, state: dict[str, Any]) -> dict[str, str]:
    """Parquet URIs of the train and val samples: given ones as is, corpora prepared into
    ``folder/data/<role>`` once per run (a restarted run reuses them)."""
    options = config.storage.storage_options()
    uris = {}
    for role in ("train", "val"):
        source = getattr(config.data, role)
        if source is None:
            continue
        if source.format == "parquet":
            uris[role] = source.uri
        elif state.get(f"{role}_uri"):
            uris[role] = state[f"{role}_uri"]
        else:
            uris[role] = prepare_source(config.task, source, join(folder, "data", role), options)
    return uris


def system_info(config: TrainJobConfig, use_gpu: bool) -> dict[str, str]:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"sys.python": platform.python_version(), "sys.torch": torch.__version__,
            "sys.ray": ray.__version__, "sys.mlflow": mlflow.__version__,
            "sys.platform": platform.platform(), "sys.driver_cpus": str(os.cpu_count()),
            "sys.cluster_cpus": str(ray.cluster_resources().get("CPU", 0)),
            "sys.cluster_gpus": str(ray.cluster_resources().get("GPU", 0)),
            "sys.driver_gpus": ", ".join(gpus) or "none", "sys.use_gpu": str(use_gpu),
            "sys.workers": str(config.scaling.num_workers),
            "sys.backend": "nccl" if use_gpu else "gloo"}


def signature_for(task: str, hparams: dict[str, Any]) -> ModelSignature:
    """The pyfunc model's signature (see ``infra.registry.CheckpointModel``)."""
    classes = len(EMOTIONS)
    if task == "face":
        inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "face_crops")])
    elif task == "voice":
        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1), "waveform_16khz")])
    elif task == "fusion":
        inputs = Schema([
            TensorSpec(np.dtype(np.float32), (-1, -1, hparams["face_dim"]), "face_feats"),
            TensorSpec(np.dtype(np.bool_), (-1, -1), "face_mask"),
            TensorSpec(np.dtype(np.float32), (-1, -1, hparams["voice_dim"]), "voice_feats"),
            TensorSpec(np.dtype(np.bool_), (-1,), "voice_mask"),
            TensorSpec(np.dtype(np.float32), (-1,), "speaking")])
    else:
        inputs = Schema([
            TensorSpec(np.dtype(np.float32), (-1, -1, hparams["input_dim"]), "features"),
            TensorSpec(np.dtype(np.int64), (-1,), "lengths")])
    shape = (-1, -1, classes) if task == "temporal" else (-1, classes)
    return ModelSignature(inputs, Schema([TensorSpec(np.dtype(np.float32), shape, "probs")]))


def evaluate_checkpoint(task: str, path: Path, table: pd.DataFrame) -> Predictions:
    """A checkpoint's predictions on a prepared table (CPU, one process)."""
    spec = TASKS[task]
    return evaluate_model(spec, spec.load(path, torch.device("cpu")), table)


def task_of_checkpoint(path: Path) -> str:
    return task_of(load_checkpoint(path).arch)


def report_artifacts(predictions: Predictions, folder: Path, title: str) -> pd.DataFrame:
    """Write the report table (CSV + markdown) and the confusion-matrix PNG into ``folder``;
    return the table (per class, macro/weighted averages, accuracy; CCC rows when present)."""
    report = classification_report(predictions.labels, predictions.probs, EMOTIONS)
    metrics = predictions.report("eval")
    for dimension in ("valence", "arousal"):
        if f"eval_ccc_{dimension}" in metrics:
            report.loc[f"ccc {dimension}"] = [np.nan, np.nan, metrics[f"eval_ccc_{dimension}"],
                                              int((~np.isnan(getattr(
                                                  predictions, f"{dimension}_true"))).sum())]
    report.index.name = "class"
    report.to_csv(folder / "evaluation_report.csv")
    (folder / "evaluation_report.md").write_text(markdown_table(report, title),
                                                 encoding="utf-8")
    plot_confusion_matrix(confusion_matrix(predictions.labels, predictions.probs),
                          EMOTIONS, folder / "confusion_matrix.png", title=title)
    return report


def markdown_table(report: pd.DataFrame, title: str) -> str:
    """The report as a markdown table (4 decimals; empty cells for undefined values)."""
    columns = list(report.columns)
    lines = [f"# {title}", "", "| class | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for name, row in report.iterrows():
        cells = ["" if pd.isna(row[c]) else (str(int(row[c])) if c == "support" else
                                              f"{row[c]:.4f}") for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _init_ref(config: TrainJobConfig, scratch: Path) -> ray.ObjectRef | None:
    """The init weights (file, ``default`` or MLflow URI) read on the driver and put in
    Ray's object store, so workers on any node get the same bytes."""
    init = resolve_init(config.model.init, config.task)
    if init is None:
        return None
    path = resolve_model_file(init, config.tracking, scratch)
    return ray.put(path.read_bytes())


def train(config: TrainJobConfig, promote: str | None = None) -> TrainResult:
    """Run (or continue) the training run of ``config``; see the module docstring."""
    owns_ray = ray_cluster.connect(config.address, config.num_cpus)
    try:
        return _train(config, promote)
    finally:
        if owns_ray:
            ray.shutdown()


def _train(config: TrainJobConfig, promote: str | None) -> TrainResult:
    options = config.storage.storage_options()
    folder = run_dir(config)
    state_uri = join(folder, RUN_FILE)
    state = _read_state(state_uri, options)
    if state:
        logger.info("continuing run %s in %s (MLflow run %s)", config.run_name, folder,
                    state.get("mlflow_run_id"))
    if promote and config.data.val is None:
        raise ValueError("--promote compares on the validation set: give data.val")
    data = prepared_data(config, folder, state)
    use_gpu = _use_gpu(config)
    if promote and not config.registry.name:
        raise ValueError("--promote needs register.name (the registered model to promote in)")
    if config.registry.name and not config.tracking.enabled:
        raise ValueError("register.name needs tracking.enabled (the registry is MLflow's)")

    params = {"config": config_json(config), "data.prepared": data}
    with tracked_run(config.tracking, config.run_name, params,
                     resume_run_id=state.get("mlflow_run_id")) as run_id, \
            tempfile.TemporaryDirectory(prefix="emoray-train-") as scratch:
        _write_state(state_uri, options, {
            **state, "mlflow_run_id": run_id if config.tracking.enabled else None,
            "train_uri": data["train"], "val_uri": data.get("val")})
        if config.tracking.enabled:
            mlflow.set_tags({**system_info(config, use_gpu), "task": config.task})
        result = _trainer(config, use_gpu, {
            "job": config_json(config), "train_uri": data["train"],
            "val_uri": data.get("val"), "storage_options": options,
            "init": _init_ref(config, Path(scratch) / "init"),
            "tracking_uri": absolute_uri(config.tracking) if config.tracking.enabled
            else None,
            "run_id": run_id if config.tracking.enabled else None},
            folder.rsplit("/", 1)[0], config.run_name).fit()
        if result.checkpoint is None:
            raise RuntimeError(f"training run {config.run_name} ended without a checkpoint")
        best = Path(scratch) / "model" / f"{config.task}_{config.run_name}.pt"
        best.parent.mkdir()
        with result.checkpoint.as_directory() as ckpt:
            if not (Path(ckpt) / BEST_FILE).is_file():
                raise RuntimeError(f"no epoch improved {config.train.early_stopping.metric}; "
                                   "nothing to register (is the metric in the epoch report?)")
            shutil.copyfile(Path(ckpt) / BEST_FILE, best)
            history = torch.load(Path(ckpt) / "state.pt", map_location="cpu",
                                 weights_only=True)["history"]

        report_dir = Path(scratch) / "report"
        report_dir.mkdir()
        if "val" in data:
            val_table = read_prepared(data["val"], options)
            predictions = evaluate_checkpoint(config.task, best, val_table)
            metrics = predictions.report("eval")
            report = report_artifacts(predictions, report_dir,
                                      f"{config.task} {config.run_name}: validation")
            logger.info("evaluation of the best epoch (%d) on %d validation samples:\n%s",
                        int(history[-1]["best_epoch"]) + 1, len(val_table),
                        report.to_string(float_format=lambda v: f"{v:.4f}"))
        else:
            metrics, report = {}, pd.DataFrame()
            logger.info("no validation set: the last epoch (%d) is the model", len(history))
        model_uri, version = state.get("model_uri"), state.get("version")
        promoted = None
        if config.tracking.enabled and model_uri is None:
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(report_dir), artifact_path="evaluation")
            model_uri, version = log_checkpoint_model(
                best, signature_for(config.task, load_checkpoint(best).hparams),
                config.registry.name)
            # A finished run started again is not logged or registered twice.
            _write_state(state_uri, options, {**_read_state(state_uri, options),
                                              "model_uri": model_uri, "version": version})
        elif model_uri is not None:
            logger.info("run %s was finished before: its model %s (version %s) stands",
                        config.run_name, model_uri, version)
        if promote and version is not None:
            promoted = promote_version(config, promote, version, val_table, Path(scratch),
                                       metrics)
        kept = join(folder, "model", best.name)
        fs, path = open_fs(kept, options)
        fs.makedirs(str(Path(path).parent), exist_ok=True)
        fs.put_file(str(best), path)
        return TrainResult(run_id, kept, metrics, report, history, model_uri, version, promoted)


def _use_gpu(config: TrainJobConfig) -> bool:
    return (ray_cluster.cluster_has_gpus() if config.scaling.use_gpu == "auto"
            else bool(config.scaling.use_gpu))


def _trainer(config: TrainJobConfig, use_gpu: bool, loop_config: dict[str, Any],
             storage_path: str, name: str) -> TorchTrainer:
    """The TorchTrainer of one run of ``train_loop``, its checkpoints in storage_path/name."""
    resources = {"CPU": config.scaling.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    return TorchTrainer(
        train_loop, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.scaling.num_workers, use_gpu=use_gpu,
            resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=config.scaling.max_failures),
            # The last two epochs: the latest to resume from, and one in case the
            # latest was being written when the job died.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)))


@dataclass(frozen=True)
class FoldResult:
    """One fold of a cross-validation: its validation subjects and their scores."""

    fold: int  # 1-based
    subjects: list[str]
    accuracy: float  # the last epoch's, on the fold's subjects (per utterance for speech)
    macro_f1: float
    best_epoch_accuracy: float  # the best epoch's: chosen on the same speakers, optimistic
    history: list[dict[str, float]]


def fold_subjects(subjects: list[str], folds: int) -> list[list[str]]:
    """The sorted subjects cut into ``folds`` contiguous groups (sizes differ by at most 1)."""
    ordered = sorted(subjects)
    if len(ordered) < folds:
        raise ValueError(f"{folds} folds need at least {folds} subjects, got {len(ordered)}")
    return [list(group) for group in np.array_split(np.asarray(ordered, dtype=object), folds)]


def cross_validate(config: TrainJobConfig) -> list[FoldResult]:
    """``emoray train --folds K``: the recipe of ``config`` trained and scored on K
    speaker-disjoint folds (``TrainJobConfig.folds``).  The rows are prepared once into
    ``storage_path/run_name/data/all``; fold k runs in ``.../fold<k>`` (a restarted job
    continues there); ``folds.json`` and ``folds.md`` (the table) land in the run folder and,
    with tracking, in one MLflow run with ``fold<k>_accuracy``, ``cv_accuracy_mean`` etc."""
    owns_ray = ray_cluster.connect(config.address, config.num_cpus)
    try:
        return _cross_validate(config)
    finally:
        if owns_ray:
            ray.shutdown()


def _cross_validate(config: TrainJobConfig) -> list[FoldResult]:
    folds = config.folds
    if folds is None:
        raise ValueError("cross_validate needs folds")
    if config.data.val is not None:
        raise ValueError("with folds the validation speakers come from data.train: leave "
                         "data.val out")
    options = config.storage.storage_options()
    folder = run_dir(config)
    state_uri = join(folder, RUN_FILE)
    state = _read_state(state_uri, options)
    source = config.data.train
    uri = state.get("all_uri") or (source.uri if source.format == "parquet" else prepare_source(
        config.task, source.model_copy(update={"split": None}), join(folder, "data", "all"),
        options))
    _write_state(state_uri, options, {**state, "all_uri": uri})
    subjects = [str(s) for s in read_prepared(uri, options)[SUBJECT].dropna().unique()]
    groups = fold_subjects(subjects, folds)
    use_gpu = _use_gpu(config)
    results = []
    with tempfile.TemporaryDirectory(prefix="emoray-folds-") as scratch:
        init = _init_ref(config, Path(scratch) / "init")
        for k, held in enumerate(groups, start=1):
            logger.info("fold %d/%d: validation subjects %s", k, folds, held)
            result = _trainer(config, use_gpu, {
                "job": config_json(config), "train_uri": uri, "val_uri": uri,
                "train_subjects": [s for s in subjects if s not in held],
                "val_subjects": held, "storage_options": options, "init": init,
                "tracking_uri": None, "run_id": None}, folder, f"fold{k}").fit()
            if result.checkpoint is None:
                raise RuntimeError(f"fold {k} ended without a checkpoint")
            with result.checkpoint.as_directory() as ckpt:
                history = torch.load(Path(ckpt) / "state.pt", map_location="cpu",
                                     weights_only=True)["history"]
            last = history[-1]
            results.append(FoldResult(k, held, float(last["val_accuracy"]),
                                      float(last["val_macro_f1"]),
                                      max(float(h["val_accuracy"]) for h in history), history))
            logger.info("fold %d: last epoch accuracy %.4f, macro-F1 %.4f", k,
                        results[-1].accuracy, results[-1].macro_f1)
        table = folds_table(results)
        logger.info("cross-validation, %d folds:\n%s", folds, table)
        out = Path(scratch) / "folds"
        out.mkdir()
        (out / "folds.md").write_text(table, encoding="utf-8")
        (out / "folds.json").write_text(json.dumps([r.__dict__ for r in results], indent=2),
                                        encoding="utf-8")
        fs, path = open_fs(folder, options)
        for name in ("folds.md", "folds.json"):
            fs.put_file(str(out / name), f"{path}/{name}")
        params = {"config": config_json(config), "data.prepared": uri}
        with tracked_run(config.tracking, f"{config.run_name}-folds", params):
            if config.tracking.enabled:
                mlflow.log_metrics(fold_metrics(results))
                mlflow.log_artifacts(str(out), artifact_path="folds")
    return results


def fold_metrics(results: list[FoldResult]) -> dict[str, float]:
    """Per-fold and mean/sd (sample sd, ddof 1) accuracy and macro-F1."""
    metrics = {}
    for r in results:
        metrics[f"fold{r.fold}_accuracy"] = r.accuracy
        metrics[f"fold{r.fold}_macro_f1"] = r.macro_f1
    for name in ("accuracy", "macro_f1"):
        values = np.array([getattr(r, name) for r in results])
        metrics[f"cv_{name}_mean"] = float(values.mean())
        metrics[f"cv_{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return metrics


def folds_table(results: list[FoldResult]) -> str:
    """The fold table as markdown: subjects, last-epoch accuracy and macro-F1, mean ± sd."""
    metrics = fold_metrics(results)
    lines = ["| fold | validation subjects | accuracy | macro-F1 |", "|---|---|---|---|"]
    lines += [f"| {r.fold} | {', '.join(r.subjects)} | {r.accuracy:.3f} | {r.macro_f1:.3f} |"
              for r in results]
    lines.append(f"| mean ± sd | | {metrics['cv_accuracy_mean']:.3f} ± "
                 f"{metrics['cv_accuracy_sd']:.3f} | {metrics['cv_macro_f1_mean']:.3f} ± "
                 f"{metrics['cv_macro_f1_sd']:.3f} |")
    return "\n".join(lines) + "\n"


def promote_version(config: TrainJobConfig, alias: str, version: str,
                    val_table: pd.DataFrame, scratch: Path,
                    metrics: dict[str, float] | None = None) -> bool:
    """Evaluate the alias's holder on the same validation table, by the same code, and move
    the alias to ``version`` of ``register.name`` only if it scores strictly better on the
    early-stopping metric.  ``metrics``: the version's evaluation when already made (else it
    is evaluated here).  Returns whether the alias moved; the decision is logged."""
    name = str(config.registry.name)
    metric = config.train.early_stopping.metric
    key = "eval_" + metric.removeprefix("val_")
    if metrics is None:
        path = resolve_model_file(f"models:/{name}/{version}", config.tracking,
                                  scratch / "candidate")
        metrics = evaluate_checkpoint(config.task, path, val_table).report("eval")
    if key not in metrics:
        raise ValueError(f"cannot compare on {metric}: the evaluation has {sorted(metrics)}")
    holder = alias_holder(name, alias)
    if holder == version:
        logger.info("version %s already holds @%s", version, alias)
        return True
    holder_score = None
    if holder is not None:
        path = resolve_model_file(f"models:/{name}/{holder}", config.tracking,
                                  scratch / "holder")
        holder_metrics = evaluate_checkpoint(config.task, path, val_table).report("eval")
        holder_score = holder_metrics.get(key, float("nan"))
    decision = promote_if_better(name, alias, version, metrics[key], holder_score, holder,
                                 config.train.early_stopping.mode)
    logger.info("%s", decision.message(metric))
    return decision.promoted


def prepare(config: TrainJobConfig, out: str) -> dict[str, str]:
    """``emoray prepare``: write the config's train and val sources as Parquet under
    ``out/train`` and ``out/val``; returns their URIs."""
    owns_ray = ray_cluster.connect(config.address, config.num_cpus)
    try:
        options = config.storage.storage_options()
        base = out if is_remote(out) else str(Path(out).resolve())
        return {role: prepare_source(config.task, getattr(config.data, role),
                                     join(base, role), options) for role in ("train", "val")
                if getattr(config.data, role) is not None}
    finally:
        if owns_ray:
            ray.shutdown()

