"""The nightly job's data flow: the timeline job's, plus a record of each finished clip.

    selected recordings ─ [emotion-timeline pipeline: … ─ write] ─ record state ─ clip rows

The state stage follows the writer, so a clip's record is written only once its timeline
and clip row are complete (Ray fuses the two into the same task).
"""

from __future__ import annotations

import pyarrow as pa
import ray.data

from infra.storage import InputRef
from operators.io.files import StorageOptions
from operators.resources import apply_map_batches
from pipelines.emotion_timeline.build import ResolvedModels
from pipelines.emotion_timeline.build import build as build_timeline
from pipelines.nightly.config import NightlyJobConfig
from pipelines.nightly.state import record, state_rows


class StateRecorder:
    """``map_batches`` function after the writer: reads written clip rows (``CLIP_SCHEMA``),
    writes ``OUT/_state/processed/<clip_id>.parquet`` for each, passes the rows on unchanged.
    ``fingerprints`` (clip id → fingerprint seen when the run listed its inputs) travel with
    the function.  Storage errors raise (infrastructure: Ray retries the task, and the writer
    before it is idempotent)."""

    def __init__(self, out: str, storage_options: StorageOptions,
                 fingerprints: dict[str, str | None]):
        self.out = out
        self.storage_options = storage_options
        self.fingerprints = fingerprints

    def __call__(self, batch: pa.Table) -> pa.Table:
        record(self.out, self.storage_options, state_rows(batch.to_pylist(), self.fingerprints))
        return batch


def build(config: NightlyJobConfig, inputs: list[InputRef], out: str, *, run_id: str,
          models: ResolvedModels, fingerprints: dict[str, str | None], gpus: bool,
          cpus: float) -> ray.data.Dataset:
    """The lazy dataset of written and recorded clip rows; consuming it runs the job."""
    ds = build_timeline(config, inputs, out, run_id=run_id, models=models, gpus=gpus, cpus=cpus)
    # The writer's resources and batch size, so Ray fuses both into one task per batch.
    return apply_map_batches(
        ds, StateRecorder(out, config.storage.storage_options(), fingerprints),
        config.resources.writer, batch_format="pyarrow")
