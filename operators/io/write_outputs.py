"""Write: each clip's timeline and clip row as Parquet, one file per clip, atomically."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from operators import schema as S
from operators.io.files import join, open_fs, remove, write_parquet_atomic
from operators.resources import StageResources
from operators.step import Step

logger = logging.getLogger(__name__)

TIMELINES_DIR = "timelines"
CLIPS_DIR = "clips"
MOMENTS_DIR = "moments"
SEGMENTS_DIR = "segments"
# Media facts that are meaningless when the probe never succeeded.
_MEDIA_FACTS = (S.CONTAINER, S.VIDEO_CODEC, S.DURATION_S, S.FPS, S.WIDTH, S.HEIGHT, S.ROTATION,
                S.HAS_AUDIO)


class WriterConfig(BaseModel):
    """Where outputs go and the run-level facts stamped on every clip row."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out: str
    storage_options: dict[str, dict]
    run_id: str
    detector: str
    face_model: str
    model_identity: str | None = None  # see schema.MODEL_IDENTITY


def timeline_uri(out: str, clip_id: str) -> str:
    return join(out, TIMELINES_DIR, f"{clip_id}.parquet")


def clip_uri(out: str, clip_id: str) -> str:
    return join(out, CLIPS_DIR, f"{clip_id}.parquet")


def moments_uri(out: str, clip_id: str) -> str:
    return join(out, MOMENTS_DIR, f"{clip_id}.parquet")


def segments_uri(out: str, clip_id: str) -> str:
    return join(out, SEGMENTS_DIR, f"{clip_id}.parquet")


def moment_counts(out: str, clip_ids, storage_options: dict[str, dict]) -> dict[str, int]:
    """Moments per kind (``schema.MOMENT_KINDS``) in the moment files of ``clip_ids`` (a
    clip without moments has no file)."""
    counts = dict.fromkeys(S.MOMENT_KINDS, 0)
    for clip_id in clip_ids:
        fs, path = open_fs(moments_uri(out, clip_id), storage_options)
        if not fs.exists(path):
            continue
        with fs.open(path, "rb") as handle:
            for kind in pq.read_table(handle, columns=[S.KIND]).column(S.KIND).to_pylist():
                counts[kind] += 1
    return counts


_FINDINGS = ((S.MOMENTS, S.MOMENT_SCHEMA, moments_uri), (S.SEGMENTS, S.SEGMENT_SCHEMA,
                                                          segments_uri))


def _clean(value):
    """Internal placeholders (NaN, "") become nulls in the written tables."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if value == "":
        return None
    return value


class TimelineWriter(Step):
    """Write each clip's outputs.

    Reads one row per clip: the ``CLIP_SCHEMA`` summary columns and ``TIMELINE``.  Writes
    ``OUT/timelines/<clip_id>.parquet`` (``TIMELINE_SCHEMA``; removed when the clip has no
    timeline, so a re-run never leaves a stale one), the findings when the plan has the
    findings step (``MOMENTS``/``SEGMENTS`` columns): ``OUT/moments/<clip_id>.parquet``
    (``MOMENT_SCHEMA``) and ``OUT/segments/<clip_id>.parquet`` (``SEGMENT_SCHEMA``), removed
    when the clip has none, and ``OUT/clips/<clip_id>.parquet`` (``CLIP_SCHEMA``, one row).
    File names derive from the clip id, so re-running the same inputs replaces rows instead
    of duplicating them; each file is written atomically, the timeline and findings before
    the clip row, so a clip row always describes complete ones.
    Placeholders become nulls (``_clean``): a clip whose frames no decoder read has a null
    ``VIDEO_DECODER``, one whose probe failed null media facts.
    Returns the clip rows (``CLIP_SCHEMA``).  Storage errors raise: they are infrastructure
    faults for Ray to retry, not clip data errors.  I/O-bound.
    """

    name = "TimelineWriter"
    batch_format = "pyarrow"
    reads = tuple(S.CLIP_SUMMARY_SCHEMA.names)
    replaces = True
    output_schema = S.CLIP_SCHEMA
    writes = tuple(S.CLIP_SCHEMA.names)

    def __init__(self, config: WriterConfig, resources: StageResources | None = None):
        super().__init__(resources)
        self.config = config

    def _clip_row(self, row: dict) -> dict:
        failed_probe = row[S.DURATION_S] is None or (
            isinstance(row[S.DURATION_S], float) and math.isnan(row[S.DURATION_S]))
        clean = {k: _clean(v) for k, v in row.items()
                 if k not in (S.TIMELINE, S.MOMENTS, S.SEGMENTS)}
        clean.setdefault(S.SIZE_BYTES, None)
        if failed_probe:
            clean.update(dict.fromkeys(_MEDIA_FACTS))
        clean[S.RUN_ID] = self.config.run_id
        clean[S.DETECTOR] = self.config.detector if clean.get(S.FRAMES_SAMPLED) else None
        clean[S.FACE_MODEL] = self.config.face_model if clean.get(S.FACE_TRACKS) else None
        clean[S.MODEL_IDENTITY] = self.config.model_identity
        clean[S.PROCESSED_AT] = datetime.now(UTC)
        return {field.name: clean.get(field.name) for field in S.CLIP_SCHEMA}

    def write_failed(self, clip_id: str, uri: str, message: str) -> dict:
        """Record a clip whose rows never arrived (its tasks failed on every retry)."""
        for output_uri in (timeline_uri, moments_uri, segments_uri):
            remove(output_uri(self.config.out, clip_id), self.config.storage_options)
        status = S.decide_status(clip_lost=True)
        row = self._clip_row({S.CLIP_ID: clip_id, S.URI: uri, S.STATUS: status.value,
                              S.ERROR: message, S.DURATION_S: None})
        write_parquet_atomic(pa.Table.from_pylist([row], schema=S.CLIP_SCHEMA),
                             clip_uri(self.config.out, clip_id), self.config.storage_options)
        return row

    def process(self, batch: pa.Table) -> pa.Table:
        clip_rows = []
        findings = [f for f in _FINDINGS if f[0] in batch.column_names]
        summaries = batch.drop_columns([S.TIMELINE, *(f[0] for f in findings)]).to_pylist()
        for i, row in enumerate(summaries):
            clip_id = row[S.CLIP_ID]
            if len(batch.column(S.TIMELINE)[i]):
                flat = pa.Table.from_struct_array(pc.list_flatten(batch.column(S.TIMELINE)
                                                                  .slice(i, 1)))
                write_parquet_atomic(flat.cast(S.TIMELINE_SCHEMA),
                                     timeline_uri(self.config.out, clip_id),
                                     self.config.storage_options)
            else:
                remove(timeline_uri(self.config.out, clip_id), self.config.storage_options)
            for column, schema, uri in findings:
                rows = batch.column(column)[i].as_py()
                if rows:
                    write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema),
                                         uri(self.config.out, clip_id),
                                         self.config.storage_options)
                else:
                    remove(uri(self.config.out, clip_id), self.config.storage_options)
            clip_row = self._clip_row(row)
            write_parquet_atomic(pa.Table.from_pylist([clip_row], schema=S.CLIP_SCHEMA),
                                 clip_uri(self.config.out, clip_id), self.config.storage_options)
            clip_rows.append(clip_row)
        return pa.Table.from_pylist(clip_rows, schema=S.CLIP_SCHEMA)
