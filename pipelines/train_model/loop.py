"""The training loop every Ray Train worker runs, and the evaluation it shares with
``emoray evaluate``.

Per epoch: a seeded, sharded pass over the training rows (``DistributedSampler``; DDP
averages the gradients), a sharded pass over the validation rows whose predictions are
gathered on every rank, the evaluation report, early stopping, then ``ray.train.report`` with
a checkpoint from rank 0.  A checkpoint directory holds:

* ``state.pt`` — weights, optimiser and LR-schedule state, epoch, early-stopping state and the
  per-epoch history (what a resumed worker continues from);
* ``best.pt`` — the best epoch's weights as an emoray checkpoint (``models/checkpoint.py``):
  the model that is evaluated, registered and served.

Resuming: a worker that finds ``ray.train.get_checkpoint()`` (after a worker-group restart,
or when the job is started again with the same ``storage_path`` and ``run_name``) loads
``state.pt`` and continues at the next epoch.  Determinism: the weights' init, the shuffling,
the augmentation and FER+ label draws derive from ``train.seed`` and the epoch, so a resumed
run draws what an uninterrupted one would.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from infra.tracking import log_epoch_metrics
from operators.schema import AROUSAL, EMOTIONS, VALENCE
from pipelines.train.balance import class_weights, oversample_rare
from pipelines.train.corpora.ferplus import VOTE_DIST
from pipelines.train.corpora.parquet import read_prepared
from pipelines.train.losses import (
    ccc_loss,
    multilabel_bce,
    soft_cross_entropy,
    weighted_cross_entropy,
)
from pipelines.train.metrics import evaluation_report
from pipelines.train.table import LABEL, LABEL_DIST, SUBJECT
from pipelines.train_model.config import TrainJobConfig
from pipelines.train_model.tasks import TASKS, Built, Outputs, RowDataset, TaskSpec

logger = logging.getLogger("emoray.train")

STATE_FILE = "state.pt"
BEST_FILE = "best.pt"


def loss_kind(job: TrainJobConfig, table: pd.DataFrame) -> str:
    """The loss ``train.loss: auto`` stands for, given the training rows (see TrainConfig)."""
    if job.train.loss != "auto":
        return job.train.loss
    source = job.data.train
    if source.format == "ferplus":
        return {"majority": "cross_entropy", "multilabel": "multilabel_bce",
                "probability": "label_draw", "crossentropy": "soft_cross_entropy"}[
                    source.ferplus_scheme]
    if LABEL_DIST in table and table[LABEL_DIST].notna().any():
        return "soft_cross_entropy"
    return "cross_entropy"


def compute_loss(kind: str, out: Outputs, batch: dict[str, torch.Tensor],
                 weight: torch.Tensor | None, job: TrainJobConfig,
                 generator: torch.Generator | None) -> torch.Tensor:
    """The configured class loss plus ``ccc_weight`` × CCC on valence/arousal where both the
    model and the batch have them.  ``generator`` None (validation) turns FER+'s label draws
    into the plurality label."""
    if kind == "multilabel_bce":
        loss = multilabel_bce(out.logits, batch[LABEL_DIST])
    elif kind == "soft_cross_entropy":
        loss = soft_cross_entropy(out.logits, batch[LABEL_DIST])
    else:
        target = batch[LABEL]
        votes = batch[VOTE_DIST]
        if kind == "label_draw" and generator is not None:
            # PLD (FER+): each step trains on a label drawn from the taggers' votes.
            drawable = ~torch.isnan(votes).any(1)
            if bool(drawable.any()):
                drawn = torch.multinomial(votes[drawable].cpu(), 1, generator=generator)[:, 0]
                target = target.clone()
                target[drawable] = drawn.to(target.device)
        loss = weighted_cross_entropy(out.logits, target, weight, job.train.label_smoothing)
    if out.valence is None:
        return loss
    pred = torch.stack([out.valence, out.arousal], 1)
    target_va = torch.stack([batch[VALENCE], batch[AROUSAL]], 1)
    if job.train.ccc_weight > 0 and bool((~torch.isnan(target_va)).any()):
        if job.train.va_loss == "mse":
            known = ~torch.isnan(target_va)
            va = torch.nn.functional.mse_loss(pred[known], target_va[known])
        else:
            va = ccc_loss(pred, target_va)
        return loss + job.train.ccc_weight * va
    # An attached zero: DDP expects a gradient for the valence/arousal head on every step.
    return loss + pred.sum() * 0.0


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device) for name, value in batch.items()}


@dataclass
class Predictions:
    """Per-row outputs on a table (rows in table order; temporal: one row per window)."""

    probs: np.ndarray  # (N, 7)
    labels: np.ndarray  # (N,) int64, -1 absent
    valence: np.ndarray | None  # (N,) predicted, None when the model has no VA head
    arousal: np.ndarray | None
    valence_true: np.ndarray  # (N,) NaN absent
    arousal_true: np.ndarray
    loss: float

    def report(self, prefix: str = "val") -> dict[str, float]:
        va: dict[str, Any] = {}
        if self.valence is not None and not np.isnan(self.valence_true).all():
            va = {"valence_true": self.valence_true, "valence_pred": self.valence,
                  "arousal_true": self.arousal_true, "arousal_pred": self.arousal}
        labelled = self.labels >= 0
        metrics = evaluation_report(self.labels, self.probs, EMOTIONS, prefix, **va) if (
            labelled.any()) else evaluation_report(prefix=prefix, **va)
        metrics[f"{prefix}_loss"] = self.loss
        return metrics


def predict_table(task: TaskSpec, built: Built, module: nn.Module, dataset: RowDataset,
                  indices: list[int], kind: str, job: TrainJobConfig | None,
                  weight: torch.Tensor | None, device: torch.device, batch_size: int
                  ) -> tuple[list[int], dict[str, np.ndarray], float, int]:
    """Run ``module`` (eval mode) on ``dataset[indices]``: (row index per output row,
    outputs by name, summed loss, loss terms)."""
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices),
                                         batch_size=batch_size, collate_fn=task.collate)
    rows: list[int] = []
    parts: dict[str, list[np.ndarray]] = {}
    total, terms = 0.0, 0
    module.eval()
    with torch.inference_mode():
        for batch in loader:
            batch = _to(batch, device)
            out = task.forward(module, built, batch)
            if job is not None:
                total += float(compute_loss(kind, out, batch, weight, job, None))
                terms += 1
            rows.extend(batch["index"].cpu().tolist())
            values = {"probs": torch.softmax(out.logits.float(), 1), LABEL: batch[LABEL],
                      "valence_true": batch[VALENCE], "arousal_true": batch[AROUSAL]}
            if out.valence is not None:
                values.update(valence=out.valence, arousal=out.arousal)
            for name, value in values.items():
                parts.setdefault(name, []).append(value.float().cpu().numpy())
    return rows, {k: np.concatenate(v) for k, v in parts.items()}, total, terms


def assemble(rows: list[int], outputs: dict[str, np.ndarray], loss: float, terms: int
             ) -> Predictions:
    order = np.argsort(np.asarray(rows), kind="stable")

    def pick(name: str) -> np.ndarray | None:
        return outputs[name][order] if name in outputs else None

    return Predictions(pick("probs"), pick(LABEL).astype(np.int64), pick("valence"),
                       pick("arousal"), pick("valence_true"), pick("arousal_true"),
                       loss / terms if terms else math.nan)


def evaluate_model(task: TaskSpec, built: Built, table: pd.DataFrame,
                   device: torch.device | str = "cpu", batch_size: int = 64) -> Predictions:
    """A model's predictions on a whole prepared table, in one process (the job's final
    evaluation, ``--promote``'s comparison and ``emoray evaluate`` all use this)."""
    dataset = RowDataset(table, task, built)
    rows, outputs, _, _ = predict_table(task, built, built.module.to(device), dataset,
                                        list(range(len(dataset))), "cross_entropy", None,
                                        None, torch.device(device), batch_size)
    if not rows:
        raise ValueError("the evaluation table has no rows")
    return assemble(rows, outputs, 0.0, 0)


def _schedule(job: TrainJobConfig):
    schedule, epochs = job.train.schedule, job.train.epochs
    floor = schedule.min_lr / job.train.lr

    def factor(epoch: int) -> float:
        if epoch < schedule.warmup_epochs:
            return (epoch + 1) / (schedule.warmup_epochs + 1)
        if schedule.name == "cosine":
            span = max(epochs - schedule.warmup_epochs, 1)
            progress = (epoch - schedule.warmup_epochs) / span
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if schedule.name == "step":
            return schedule.gamma ** ((epoch - schedule.warmup_epochs) // schedule.step_epochs)
        return 1.0

    return factor


def _optimizer(job: TrainJobConfig, module: nn.Module) -> torch.optim.Optimizer:
    if job.train.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=job.train.lr,
                               momentum=job.train.momentum, weight_decay=job.train.weight_decay)
    return torch.optim.AdamW(module.parameters(), lr=job.train.lr,
                             weight_decay=job.train.weight_decay)


def _improved(value: float | None, best: float | None, job: TrainJobConfig) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    delta = job.train.early_stopping.min_delta
    return value > best + delta if job.train.early_stopping.mode == "max" else (
        value < best - delta)


def _gather(obj: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker.  ``loop_config``: ``job`` (TrainJobConfig as JSON data),
    ``train_uri``/``val_uri`` (prepared Parquet), ``init`` (an ObjectRef of checkpoint bytes
    or None), ``tracking_uri``/``run_id`` (MLflow, rank 0 logs each epoch; None: off)."""
    job = TrainJobConfig.model_validate(loop_config["job"])
    task = TASKS[job.task]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
    seed = job.train.seed
    torch.manual_seed(seed + rank)  # dropout masks: per rank, reproducible

    options = loop_config.get("storage_options") or {}
    train_table = _of_subjects(read_prepared(loop_config["train_uri"], options),
                               loop_config.get("train_subjects"))
    # No validation set (a final model trained on every subject): the last epoch is kept.
    val_table = (_of_subjects(read_prepared(loop_config["val_uri"], options),
                              loop_config.get("val_subjects"))
                 if loop_config.get("val_uri") else None)
    if job.train.oversample.enabled:
        train_table = oversample_rare(train_table, job.train.oversample.target_ratio,
                                      job.train.oversample.max_factor, seed)
    kind = loss_kind(job, train_table)
    weight = None
    if job.train.class_weights and kind in ("cross_entropy", "label_draw"):
        labels = train_table[LABEL].to_numpy() if task.name != "temporal" else np.concatenate(
            [np.asarray(v) for v in train_table[LABEL]])
        weight = class_weights(labels).to(device)

    init_ref = loop_config.get("init")
    if init_ref is not None:
        with tempfile.TemporaryDirectory(prefix="emoray-init-") as tmp:
            init_path = Path(tmp) / "init.pt"
            init_path.write_bytes(ray.get(init_ref))
            built = task.build(job.model.arch or task.default_arch, dict(job.model.hparams),
                               init_path, seed)
    else:
        built = task.build(job.model.arch or task.default_arch, dict(job.model.hparams), None,
                           seed)
    raw_module = built.module.to(device)
    optimizer = _optimizer(job, raw_module)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(job))

    start_epoch, best_value, best_epoch, bad_epochs = 0, None, -1, 0
    history: list[dict[str, float]] = []
    best_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
        raw_module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best_value, best_epoch = state["best_value"], int(state["best_epoch"])
        bad_epochs, history = int(state["bad_epochs"]), list(state["history"])
        best_state = state["best_model"]
        if rank == 0:
            logger.info("resuming from the checkpoint of epoch %d: continuing at epoch %d",
                        start_epoch - 1, start_epoch)
    module = ray.train.torch.prepare_model(raw_module)
    if start_epoch >= job.train.epochs or _stopped(history):
        if rank == 0:
            logger.info("run already complete (%d epochs); nothing to train", len(history))
        return

    train_set = RowDataset(train_table, task, built)
    val_set = RowDataset(val_table, task, built) if val_table is not None else None
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank,
                                                  shuffle=True, seed=seed)
    loader = torch.utils.data.DataLoader(train_set, batch_size=job.train.batch_size,
                                         sampler=sampler, collate_fn=task.collate,
                                         num_workers=job.train.loader_workers)
    val_indices = list(range(rank, len(val_set), world)) if val_set is not None else []
    es = job.train.early_stopping

    for epoch in range(start_epoch, job.train.epochs):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)
        module.train()
        total, steps = 0.0, 0
        for batch in loader:
            batch = task.sample(batch, built, job.train, generator)
            if job.train.augment.enabled:
                batch = task.augment(batch, built, job.train.augment, generator)
            batch = _to(batch, device)
            out = task.forward(module, built, batch)
            loss = compute_loss(kind, out, batch, weight, job, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()

        if val_set is None:
            losses = _gather((total, steps))
            metrics: dict[str, float] = {}
        else:
            rows, outputs, val_loss, terms = predict_table(
                task, built, module, val_set, val_indices, kind, job, weight, device,
                job.train.batch_size)
            parts = _gather((rows, outputs, val_loss, terms, total, steps))
            merged = {name: np.concatenate([p[1][name] for p in parts if p[0]])
                      for name in outputs} if any(p[0] for p in parts) else {}
            if not merged:
                raise ValueError("the validation table has no rows")
            predictions = assemble([r for p in parts for r in p[0]], merged,
                                   sum(p[2] for p in parts), sum(p[3] for p in parts))
            metrics = predictions.report("val")
            losses = [(p[4], p[5]) for p in parts]
        train_steps = sum(p[1] for p in losses)
        # session_first_epoch: where this worker group started (> 0 after a resume).
        metrics.update(epoch=float(epoch), session_first_epoch=float(start_epoch), lr=lr,
                       epoch_seconds=time.perf_counter() - started,
                       train_loss=sum(p[0] for p in losses) / max(train_steps, 1))

        value = metrics.get(es.metric)
        if value is None and val_set is not None and epoch == start_epoch and rank == 0:
            logger.warning("early-stopping metric %s is not in the epoch report (%s)",
                           es.metric, sorted(k for k in metrics if k.startswith("val_")))
        # Without validation every epoch counts as the best so far: the last one is kept.
        if val_set is None or _improved(value, best_value, job):
            best_value, best_epoch, bad_epochs = value, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in
                                        raw_module.state_dict().items()})
        else:
            bad_epochs += 1
        stop = es.patience is not None and bad_epochs >= es.patience
        metrics.update(best_epoch=float(best_epoch), early_stop=float(stop))
        if best_value is not None:
            metrics["best_" + es.metric] = float(best_value)
        history.append(metrics)

        if rank == 0:
            logger.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  %s %s  (best %s at "
                        "epoch %d)  lr %.2e  %.1f s", epoch + 1, job.train.epochs,
                        metrics["train_loss"], metrics.get("val_loss", math.nan), es.metric,
                        "n/a" if value is None else f"{value:.4f}",
                        "n/a" if best_value is None else f"{best_value:.4f}", best_epoch + 1,
                        lr, metrics["epoch_seconds"])
            if loop_config.get("run_id"):
                log_epoch_metrics(loop_config["tracking_uri"], loop_config["run_id"], metrics,
                                  epoch)
        _report(rank, metrics, {
            "model": {k: v.detach().cpu() for k, v in raw_module.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "best_value": best_value, "best_epoch": best_epoch,
            "bad_epochs": bad_epochs, "history": history, "best_model": best_state,
        }, built, job)
        if stop:
            if rank == 0:
                logger.info("early stop: %s has not improved for %d epochs (best %.4f at "
                            "epoch %d)", es.metric, es.patience, best_value, best_epoch + 1)
            break


def _of_subjects(table: pd.DataFrame, subjects: list[str] | None) -> pd.DataFrame:
    """The rows of these subjects (a fold's training or validation speakers); all for None."""
    if subjects is None:
        return table
    kept = table[table[SUBJECT].isin(subjects)].reset_index(drop=True)
    if kept.empty:
        raise ValueError(f"no prepared rows of subjects {subjects}")
    return kept


def _stopped(history: list[dict[str, float]]) -> bool:
    return bool(history) and bool(history[-1].get("early_stop"))


def _report(rank: int, metrics: dict[str, float], state: dict[str, Any], built: Built,
            job: TrainJobConfig) -> None:
    """``ray.train.report`` on every rank; rank 0 attaches the epoch's checkpoint."""
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="emoray-ckpt-") as folder:
        torch.save(state, os.path.join(folder, STATE_FILE))
        if state["best_model"] is not None:
            best = copy.deepcopy(built.module).cpu()
            best.load_state_dict(state["best_model"])
            built.save(best, Path(folder) / BEST_FILE, {
                "name": job.registry.name or f"{job.task}-{job.run_name}",
                "run_name": job.run_name, "best_epoch": state["best_epoch"],
                f"best_{job.train.early_stopping.metric}": state["best_value"]})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
