"""Findings step: baselines, baseline-relative timeline values, moments and per-task
summaries of each clip, before the writer."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from operators import schema as S
from operators.findings.baseline import Baseline, add_baseline, window_mid
from operators.findings.config import FindingsConfig
from operators.findings.context import ClipContext, usable_markers
from operators.findings.moments import Moment, find_moments
from operators.findings.summaries import summaries, task_at
from operators.resources import StageResources
from operators.step import Step

logger = logging.getLogger(__name__)

_NEW_TIMELINE_FIELDS = [f.name for f in S.FINDINGS_TIMELINE_FIELDS]


def _participant_key(baselines: dict[int | None, Baseline]) -> int | None:
    """Track 0 when the clip has face tracks, else the rows without one (voice only)."""
    return 0 if 0 in baselines else None


class Findings(Step):
    """Each track against its own baseline; moments; per-task summaries (README: Findings).

    Reads clip summary rows (``CLIP_ID``, ``URI``, ``DURATION_S``, ``TIMELINE``).  Fills the
    timeline's ``FINDINGS_TIMELINE_FIELDS`` (metadata, ``TASK``, ``Z_COLUMNS``) and writes the
    ``FINDINGS_SCHEMA`` columns: metadata, ``WARNINGS``, ``BASELINE_SOURCE`` and
    ``BASELINE_WINDOWS`` (of the participant's track), ``MOMENTS`` (``MOMENT_SCHEMA``
    structs, strongest first) and ``SEGMENTS`` (``SEGMENT_SCHEMA`` structs: the session,
    then one per usable task marker).

    ``contexts`` maps clip ids to their :class:`ClipContext` (metadata, markers, the driver's
    warnings); clips not in it have none.  Bad input never raises: a marker past the
    recording's end becomes a warning and is ignored; a track with fewer confident windows
    than ``min_baseline_windows`` gets ``baseline_source = insufficient``, null ``*_z``
    values and no moments.  A clip without a timeline gets no moments and no summaries.
    Light CPU work on one small row per clip.
    """

    name = "Findings"
    batch_format = "pyarrow"
    reads = (S.CLIP_ID, S.URI, S.DURATION_S, S.TIMELINE)
    writes = (S.TIMELINE, *S.FINDINGS_SCHEMA.names)
    output_schema = S.FINDINGS_SCHEMA

    def __init__(self, config: FindingsConfig, contexts: dict[str, ClipContext] | None = None,
                 resources: StageResources | None = None):
        super().__init__(resources)
        self.config = config
        self.contexts = contexts or {}

    def process(self, batch: pa.Table) -> pa.Table:
        timelines, found = [], []
        for i in range(batch.num_rows):
            values = pc.list_flatten(batch.column(S.TIMELINE).slice(i, 1))
            flat = (pa.Table.from_struct_array(values) if len(values)
                    else S.TIMELINE_SCHEMA.empty_table())
            row = {c: batch.column(c)[i].as_py() for c in (S.CLIP_ID, S.URI, S.DURATION_S)}
            table, clip = self.clip(row, flat)
            timelines.append(table)
            found.append(clip)
        lengths = np.array([0] + [t.num_rows for t in timelines], np.int32)
        struct = pa.struct(list(S.TIMELINE_SCHEMA))
        values = (pa.concat_tables(timelines).to_struct_array().combine_chunks()
                  if timelines else pa.array([], struct))
        column = pa.ListArray.from_arrays(pa.array(np.cumsum(lengths), pa.int32()),
                                          values.cast(struct))
        out = batch.set_column(batch.schema.get_field_index(S.TIMELINE), S.TIMELINE, column)
        added = pa.Table.from_pylist(found, schema=S.FINDINGS_SCHEMA)
        for name in S.FINDINGS_SCHEMA.names:
            out = out.append_column(S.FINDINGS_SCHEMA.field(name), added.column(name))
        return out

    def clip(self, row: dict, flat: pa.Table) -> tuple[pa.Table, dict]:
        """One clip's timeline with the findings fields, and its ``FINDINGS_SCHEMA`` row."""
        context = self.contexts.get(row[S.CLIP_ID], ClipContext())
        metadata = {c: context.metadata.get(c) for c in S.METADATA_COLUMNS}
        duration = row[S.DURATION_S]
        markers, late = usable_markers(context.markers, duration,
                                       self.config.marker_tolerance_s)
        warnings = [*context.warnings, *late]
        result = {**metadata, S.WARNINGS: warnings, S.BASELINE_SOURCE: None,
                  S.BASELINE_WINDOWS: None, S.MOMENTS: [], S.SEGMENTS: []}
        flat = flat.cast(S.TIMELINE_SCHEMA) if flat.num_rows else S.TIMELINE_SCHEMA.empty_table()
        if not flat.num_rows:
            return flat, result
        timeline = flat.to_pandas()
        baseline_span = next(((m.start_s, m.end_s) for m in markers
                              if m.task == self.config.baseline_task), None)
        timeline, baselines = add_baseline(timeline, self.config, baseline_span)
        with_baseline = {k for k, b in baselines.items() if b.median is not None}
        moments = find_moments(timeline, self.config, with_baseline)
        participant = _participant_key(baselines)
        base = baselines[participant]
        result[S.BASELINE_SOURCE] = base.source
        result[S.BASELINE_WINDOWS] = base.windows
        if base.median is None:
            warnings.append(f"not enough data for a baseline: {base.windows} confident "
                            f"window(s) of the participant, fewer than "
                            f"{self.config.min_baseline_windows}")
        identity = {S.CLIP_ID: row[S.CLIP_ID], S.URI: row[S.URI], **metadata}
        result[S.MOMENTS] = [self._moment_row(identity, rank, m, markers)
                             for rank, m in enumerate(moments, 1)]
        if duration is None or np.isnan(duration):
            duration = float(timeline[S.WINDOW_END_S].max())
        track = (timeline[timeline[S.TRACK_ID] == participant] if participant is not None
                 else timeline[timeline[S.TRACK_ID].isna()])
        own = [m for m in moments if m.track_id == participant]
        result[S.SEGMENTS] = [{**identity, **s} for s in summaries(track, markers, duration,
                                                                    own)]
        # the findings fields of the timeline, column by column: the rest stays as built
        mid = window_mid(timeline)
        timeline[S.TASK] = [task_at(markers, t) for t in mid]
        for column in S.METADATA_COLUMNS:
            timeline[column] = metadata[column]
        for name in _NEW_TIMELINE_FIELDS:
            field = S.TIMELINE_SCHEMA.field(name)
            values = timeline[name]
            array = pa.array(values.astype(object).where(values.notna(), None).tolist(),
                             type=field.type)
            flat = flat.set_column(flat.schema.get_field_index(name), field, array)
        return flat, result

    @staticmethod
    def _moment_row(identity: dict, rank: int, moment: Moment, markers: list) -> dict:
        return {**identity, S.TRACK_ID: moment.track_id, S.KIND: moment.kind, S.RANK: rank,
                S.START_S: moment.start_s, S.END_S: moment.end_s, S.PEAK_S: moment.peak_s,
                S.SCORE: moment.score, S.EVIDENCE: moment.evidence,
                S.TASK: task_at(markers, moment.peak_s)}


def moments_frame(timeline: pd.DataFrame, config: FindingsConfig,
                  baseline_span: tuple[float, float] | None = None) -> pd.DataFrame:
    """The moments of a written timeline (pandas), as the step finds them: for tuning and
    evaluation offline (``pipelines/findings``)."""
    timeline, baselines = add_baseline(timeline, config, baseline_span)
    with_baseline = {k for k, b in baselines.items() if b.median is not None}
    moments = find_moments(timeline, config, with_baseline)
    return pd.DataFrame([m.__dict__ for m in moments],
                        columns=["track_id", "kind", "start_s", "end_s", "peak_s", "score",
                                 "evidence"])
