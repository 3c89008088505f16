"""What the nightly job has processed, kept next to the outputs, and what a run should do.

``OUT/_state/processed/<clip_id>.parquet`` (one row, ``STATE_SCHEMA``) is written right after
that clip's timeline and clip row are complete (a Ray Data stage after the writer), so a
record always describes finished outputs.  At the end of a successful run the per-clip
records are folded into ``OUT/_state/processed.parquet`` and deleted; a crash between the
two leaves both, and readers keep the newest record per clip.  A driver killed mid-run
leaves records for exactly the clips whose outputs were finished: the next run skips those
and processes the rest (a clip whose outputs were written but whose record was not is
processed again and its files replaced, never duplicated).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from infra.storage import InputRef
from operators import schema as S
from operators.io.files import StorageOptions, join, open_fs, write_parquet_atomic

logger = logging.getLogger(__name__)

STATE_DIR = "_state"
FINGERPRINT = "fingerprint"  # ETag + size (object stores), size + mtime (local files)
MODIFIED_AT = "modified_at"

STATE_SCHEMA = pa.schema([
    pa.field(S.CLIP_ID, pa.string(), nullable=False),
    pa.field(S.URI, pa.string(), nullable=False),
    pa.field(FINGERPRINT, pa.string()),
    pa.field(S.MODEL_IDENTITY, pa.string()),
    pa.field(S.STATUS, pa.string(), nullable=False),
    pa.field(S.RUN_ID, pa.string()),
    pa.field(S.PROCESSED_AT, pa.timestamp("us", tz="UTC")),
])


def processed_dir(out: str) -> str:
    return join(out, STATE_DIR, "processed")


def compacted_uri(out: str) -> str:
    return join(out, STATE_DIR, "processed.parquet")


@dataclass(frozen=True)
class Recording:
    """An input with what identifies its current bytes, as its listing said (S3 ETag + size,
    or local size + mtime in ns; None: the object is missing): no request per object."""

    ref: InputRef

    @property
    def clip_id(self) -> str:
        return S.clip_id_for(self.ref.uri)

    @property
    def fingerprint(self) -> str | None:
        return self.ref.fingerprint

    @property
    def modified_at(self) -> datetime | None:
        return self.ref.modified_at


# --- the record ------------------------------------------------------------------------------
def state_rows(clip_rows: list[dict[str, Any]], fingerprints: dict[str, str | None]
               ) -> list[dict[str, Any]]:
    """State records for written clip rows (``CLIP_SCHEMA`` dicts)."""
    return [{S.CLIP_ID: row[S.CLIP_ID], S.URI: row[S.URI],
             FINGERPRINT: fingerprints.get(row[S.CLIP_ID]),
             S.MODEL_IDENTITY: row.get(S.MODEL_IDENTITY), S.STATUS: row[S.STATUS],
             S.RUN_ID: row.get(S.RUN_ID), S.PROCESSED_AT: row.get(S.PROCESSED_AT)}
            for row in clip_rows]


def record(out: str, storage_options: StorageOptions, rows: list[dict[str, Any]]) -> None:
    """Write one state file per clip (atomic: a record is whole or absent)."""
    for row in rows:
        write_parquet_atomic(pa.Table.from_pylist([row], schema=STATE_SCHEMA),
                             join(processed_dir(out), f"{row[S.CLIP_ID]}.parquet"),
                             storage_options)


def _per_clip_files(out: str, storage_options: StorageOptions) -> list[str]:
    fs, path = open_fs(processed_dir(out), storage_options)
    try:
        names = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    # Hidden names are temporary files of an interrupted local write.
    return sorted(n for n in names if n.endswith(".parquet")
                  and not PurePosixPath(n).name.startswith("."))


def read_state(out: str, storage_options: StorageOptions) -> pd.DataFrame:
    """The newest record per clip (``STATE_SCHEMA`` columns; empty when nothing ran yet)."""
    tables = []
    fs, compacted = open_fs(compacted_uri(out), storage_options)
    if fs.exists(compacted):
        tables.append(pq.read_table(compacted, filesystem=fs, schema=STATE_SCHEMA))
    files = _per_clip_files(out, storage_options)
    if files:
        tables.append(pq.read_table(files, filesystem=fs, schema=STATE_SCHEMA))
    if not tables:
        return STATE_SCHEMA.empty_table().to_pandas()
    frame = pa.concat_tables(tables).to_pandas()
    return (frame.sort_values(S.PROCESSED_AT, na_position="first")
            .drop_duplicates(S.CLIP_ID, keep="last").reset_index(drop=True))


def compact(out: str, storage_options: StorageOptions) -> int:
    """Fold the per-clip records into the compacted table, then delete them.  Run under the
    lease.  Returns the number of clips in the record."""
    files = _per_clip_files(out, storage_options)
    state = read_state(out, storage_options)
    if not files:
        return len(state)
    write_parquet_atomic(pa.Table.from_pandas(state, schema=STATE_SCHEMA, preserve_index=False),
                         compacted_uri(out), storage_options)
    fs, _ = open_fs(processed_dir(out), storage_options)
    for name in files:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(name)
    return len(state)


# --- the plan --------------------------------------------------------------------------------
NEW, CHANGED, MODEL_CHANGED, RETRY = "new", "changed", "model changed", "previously failed"


@dataclass(frozen=True)
class Planned:
    recording: Recording
    reason: str  # NEW | CHANGED | MODEL_CHANGED | RETRY
    detail: str


@dataclass(frozen=True)
class Plan:
    """What a run processes (``selected``) and what it leaves."""

    selected: list[Planned]
    deferred: list[Planned]  # due, but beyond --limit: the next run takes them
    up_to_date: int
    before_since: int  # not modified since --since, and so not considered

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((NEW, CHANGED, MODEL_CHANGED, RETRY), 0)
        for item in self.selected:
            counts[item.reason] += 1
        return counts


def make_plan(recordings: list[Recording], state: pd.DataFrame, identity: str, *,
              since: datetime | None = None, limit: int | None = None,
              retry_statuses: tuple[str, ...] = ()) -> Plan:
    """Decide per recording: new (no record), changed (fingerprint differs), model changed
    (made by other models), previously failed (a status in ``retry_statuses``), else up to
    date.  ``since`` keeps recordings modified at or after it (an unknown time is kept);
    ``limit`` takes the oldest-modified first, the rest are ``deferred``."""
    # Nulls read back as NaN: make them None so that "missing then, missing now" is equal.
    known = {row[S.CLIP_ID]: {k: v if isinstance(v, str) else None for k, v in row.items()}
             for row in state.to_dict("records")}
    due, up_to_date, before_since = [], 0, 0
    for rec in recordings:
        if since is not None and rec.modified_at is not None and rec.modified_at < since:
            before_since += 1
            continue
        prev = known.get(rec.clip_id)
        if prev is None:
            due.append(Planned(rec, NEW, "no record of this recording"))
        elif prev[FINGERPRINT] != rec.fingerprint:
            due.append(Planned(rec, CHANGED, f"{prev[FINGERPRINT]} -> {rec.fingerprint}"))
        elif prev[S.MODEL_IDENTITY] != identity:
            due.append(Planned(rec, MODEL_CHANGED, f"made by {prev[S.MODEL_IDENTITY]}"))
        elif prev[S.STATUS] in retry_statuses:
            due.append(Planned(rec, RETRY, f"last status {prev[S.STATUS]} "
                                           f"(run {prev[S.RUN_ID]})"))
        else:
            up_to_date += 1
    oldest = datetime.min.replace(tzinfo=UTC)
    due.sort(key=lambda p: (p.recording.modified_at or oldest, p.recording.ref.uri))
    cut = len(due) if limit is None else limit
    return Plan(due[:cut], due[cut:], up_to_date, before_since)
