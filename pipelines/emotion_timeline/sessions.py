"""Session metadata and task markers of a run's recordings, read on the driver.

* **Metadata**: a ``.csv`` manifest's optional columns ``participant``, ``study``,
  ``session``, ``recorded_at`` (ISO 8601; without a zone, UTC), per row.
* **Task markers**: ``uri,task,start_s,end_s`` rows from the ``tasks`` file (``--tasks``;
  ``uri`` is the recording's URI or just its file name) and from sidecar files
  ``<recording name without extension>.tasks.csv`` next to a recording, in a local folder or
  under an S3 prefix (its ``uri`` column may be absent: the rows are the recording's).

Bad rows never stop the job: a row whose times do not parse, whose ``end_s`` ≤ ``start_s``,
or whose file name names several recordings becomes a warning on the clip rows it names;
a row naming no recording of the run is logged (there is no clip row to carry it).  Rows
past a recording's end are found by the findings step, which knows the duration.  A
``tasks`` file that cannot be read is a bad argument (:class:`InputError`).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import defaultdict
from pathlib import Path, PurePosixPath

import pandas as pd

from infra.storage import InputError, InputRef, StorageConfig
from operators import schema as S
from operators.findings.context import ClipContext, Marker
from operators.io.files import is_remote, open_fs

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".tasks.csv"
TASK_COLUMNS = ("task", "start_s", "end_s")


def _read_text(uri: str, config: StorageConfig) -> str:
    fs, path = open_fs(uri, config.storage_options())
    with fs.open(path, "rt", encoding="utf-8") as handle:
        return handle.read()


def parse_markers(text: str, origin: str, *, need_uri: bool
                  ) -> tuple[list[tuple[str | None, Marker]], list[tuple[str | None, str]]]:
    """The markers of a tasks CSV as (uri or None, marker), and warnings as (uri or None,
    message) for the rows that are not markers.  ``origin`` names the file in messages;
    rows are numbered as a spreadsheet shows them (header = row 1)."""
    reader = csv.DictReader(io.StringIO(text))
    needed = (("uri",) if need_uri else ()) + TASK_COLUMNS
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        return [], [(None, f"{origin}: no column(s) {', '.join(missing)} (has "
                           f"{reader.fieldnames}); its task markers are ignored")]
    markers, warnings = [], []
    for number, row in enumerate(reader, start=2):
        uri = (row.get("uri") or "").strip() or None
        where = f"{origin} row {number}"
        task = (row["task"] or "").strip()
        try:
            start, end = float(row["start_s"]), float(row["end_s"])
        except (TypeError, ValueError):
            warnings.append((uri, f"{where}: start_s {row['start_s']!r} / end_s "
                                  f"{row['end_s']!r} are not numbers; marker ignored"))
            continue
        if not task:
            warnings.append((uri, f"{where}: no task name; marker ignored"))
        elif not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            warnings.append((uri, f"{where}: times {start:g}–{end:g} s are not finite "
                                  "non-negative seconds; marker ignored"))
        elif end <= start:
            warnings.append((uri, f"{where}: end_s {end:g} ≤ start_s {start:g}; marker "
                                  "ignored"))
        elif need_uri and uri is None:
            warnings.append((None, f"{where}: no uri; marker ignored"))
        else:
            markers.append((uri, Marker(task, start, end, where)))
    return markers, warnings


def _name(uri: str) -> str:
    return PurePosixPath(uri).name


def _canonical(uri: str) -> str:
    return uri if is_remote(uri) else str(Path(uri).resolve())


def _metadata(spec: str, inputs: list[InputRef], config: StorageConfig
              ) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Per input URI its metadata from a CSV manifest (``spec``), and warnings."""
    if PurePosixPath(spec).suffix.lower() != ".csv":
        return {}, {}
    fs, path = open_fs(spec, config.storage_options())
    if not fs.isfile(path):
        return {}, {}
    reader = csv.DictReader(io.StringIO(_read_text(spec, config)))
    rows = [(n, row) for n, row in enumerate(reader, start=2) if (row.get("uri") or "").strip()]
    # list_inputs keeps every non-empty uri row of a manifest, in order: one InputRef each
    if len(rows) != len(inputs):
        raise InputError(f"manifest {spec!r}: {len(rows)} rows but {len(inputs)} inputs")
    metadata, warnings = {}, defaultdict(list)
    for (number, row), ref in zip(rows, inputs, strict=True):
        values: dict = {c: (row.get(c) or "").strip() or None
                        for c in (S.PARTICIPANT, S.STUDY, S.SESSION)}
        text = (row.get(S.RECORDED_AT) or "").strip()
        values[S.RECORDED_AT] = None
        if text:
            try:
                stamp = pd.Timestamp(text)
                stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else (
                    stamp.tz_convert("UTC"))
                values[S.RECORDED_AT] = stamp.to_pydatetime()
            except ValueError:
                warnings[ref.uri].append(f"{_name(spec)} row {number}: recorded_at {text!r} is not "
                                         "an ISO 8601 time; left null")
        metadata[ref.uri] = values
    return metadata, warnings


def _sidecars(inputs: list[InputRef], config: StorageConfig) -> dict[str, str]:
    """Input URI → the URI of its sidecar tasks file, where one exists.  Each folder or
    prefix holding inputs is listed once (not one request per recording)."""
    by_folder: dict[str, list[InputRef]] = defaultdict(list)
    for ref in inputs:
        by_folder[ref.uri.rsplit("/", 1)[0]].append(ref)
    found = {}
    for folder, refs in by_folder.items():
        fs, path = open_fs(folder, config.storage_options())
        try:
            names = {_name(p) for p in fs.ls(path, detail=False)}
        except OSError:
            continue  # the folder's recordings get their read_error from the job
        for ref in refs:
            sidecar = PurePosixPath(_name(ref.uri)).stem + SIDECAR_SUFFIX
            if sidecar in names:
                found[ref.uri] = f"{folder}/{sidecar}"
    return found


def clip_contexts(spec: str, inputs: list[InputRef], config: StorageConfig,
                  tasks: str | None = None) -> dict[str, ClipContext]:
    """Clip id → :class:`ClipContext` for the run's ``inputs`` (listed from ``spec``), with
    the markers of ``tasks`` (a CSV file or URI) and of the sidecar files."""
    metadata, found = _metadata(spec, inputs, config)
    warnings: dict[str, list[str]] = defaultdict(list, found)
    markers: dict[str, list[Marker]] = defaultdict(list)
    by_uri = {_canonical(ref.uri): ref.uri for ref in inputs}
    by_name: dict[str, list[str]] = defaultdict(list)
    for ref in inputs:
        by_name[_name(ref.uri)].append(ref.uri)

    def targets(uri: str | None) -> list[str]:
        if uri is None:
            return []
        if "/" not in uri:
            return by_name.get(uri, [])
        return [by_uri[c] for c in (_canonical(uri),) if c in by_uri]

    if tasks is not None:
        try:
            text = _read_text(tasks, config)
        except OSError as exc:
            raise InputError(f"tasks file {tasks!r} cannot be read: {exc}") from exc
        rows, bad = parse_markers(text, _name(tasks), need_uri=True)
        for uri, message in bad:
            hit = targets(uri)
            if not hit:
                logger.warning("%s", message)
            for target in hit:
                warnings[target].append(message)
        for uri, marker in rows:
            hit = targets(uri)
            if not hit:
                logger.warning("%s: recording %r is not among this run's inputs; marker "
                               "ignored", marker.origin, uri)
            elif len(hit) > 1:
                for target in hit:
                    warnings[target].append(f"{marker.origin}: file name {uri!r} names "
                                            f"{len(hit)} recordings; marker ignored")
            else:
                markers[hit[0]].append(marker)
    for uri, sidecar in _sidecars(inputs, config).items():
        try:
            text = _read_text(sidecar, config)
        except OSError as exc:
            warnings[uri].append(f"{_name(sidecar)} cannot be read ({exc}); its task "
                                 "markers are ignored")
            continue
        rows, bad = parse_markers(text, _name(sidecar), need_uri=False)
        markers[uri] += [marker for _, marker in rows]
        warnings[uri] += [message for _, message in bad]
    return {S.clip_id_for(ref.uri): ClipContext(metadata.get(ref.uri, {}),
                                                tuple(markers.get(ref.uri, ())),
                                                tuple(warnings.get(ref.uri, ())))
            for ref in inputs}
