"""The nightly job's data flow: the timeline job's, plus a record of each finished clip.

    selected recordings ─ [emotion-timeline pipeline: … ─ write] ─ record state ─ clip rows

The state stage follows the writer, so a clip's record is written only once its timeline
and clip row are complete (Ray fuses the two into the same task).
"""

from __future__ import annotations

import pyarrow as pa
import ray.data

from infra.storage import InputRef
from operators import schema as S
from operators.findings.context import ClipContext
from operators.io.files import StorageOptions
from operators.io.write_outputs import TimelineWriter
from operators.resources import StageResources
from operators.step import Step
from pipelines.emotion_timeline.build import ResolvedModels
from pipelines.emotion_timeline.build import build as build_timeline
from pipelines.nightly.config import NightlyJobConfig
from pipelines.nightly.state import record, state_rows


class StateRecorder(Step):
    """The step after the writer: reads written clip rows (``CLIP_SCHEMA``), writes
    ``OUT/_state/processed/<clip_id>.parquet`` for each, passes the rows on unchanged.
    ``fingerprints`` (clip id → fingerprint seen when the run listed its inputs) travel with
    the step.  Storage errors raise (infrastructure: Ray retries the task, and the writer
    before it is idempotent).  The writer's resources, so Ray fuses both into one task."""

    name = "StateRecorder"
    batch_format = "pyarrow"
    reads = (S.CLIP_ID, S.URI, S.STATUS, S.MODEL_IDENTITY)

    def __init__(self, out: str, storage_options: StorageOptions,
                 fingerprints: dict[str, str | None], resources: StageResources | None = None):
        super().__init__(resources)
        self.out = out
        self.storage_options = storage_options
        self.fingerprints = fingerprints

    def process(self, batch: pa.Table) -> pa.Table:
        record(self.out, self.storage_options, state_rows(batch.to_pylist(), self.fingerprints))
        return batch


def build(config: NightlyJobConfig, inputs: list[InputRef], *, models: ResolvedModels,
          recorder: StateRecorder, writer: TimelineWriter, gpus: bool, cpus: float,
          contexts: dict[str, ClipContext] | None = None) -> ray.data.Dataset:
    """The lazy dataset of clip rows written by ``writer`` and recorded by ``recorder``;
    consuming it runs the job.  (The job runner passes the clips it records as failed on
    the driver through ``recorder`` as well.)  ``contexts``: as the timeline job's."""
    return build_timeline(config, inputs, models=models, writer=writer, gpus=gpus, cpus=cpus,
                          after=(recorder,), contexts=contexts)
