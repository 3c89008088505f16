"""The report of an output folder: what ``emoray report OUT --out REPORT_DIR`` writes.

    REPORT_DIR/index.html                 sortable table of every session, failed ones too
    REPORT_DIR/sessions.xlsx              the same table, and a sheet of all moments
    REPORT_DIR/clips/<clip_id>.html       one page per session: player + timeline + moments
    REPORT_DIR/clips/<clip_id>/*.csv      timeline.csv, moments.csv, segments.csv
    REPORT_DIR/media/<clip_id>.mp4        the recording the page plays (pipelines/report/media)
    REPORT_DIR/static/report.{js,css}     the pages' script and style, written here

Reads ``OUT`` (local or ``s3://``) through :class:`~pipelines.report.read.OutputFolder`;
writes ``REPORT_DIR`` (local or ``s3://``) through :class:`ReportFolder`.  A damaged or
partial output never stops the report: each session's page and index row say what is
missing.  Face crops and embeddings are never in an output, so never in a report; the
recordings are (see README "Reviewing a session").
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import mlflow
import pandas as pd
from tqdm import tqdm

from infra.preflight import ExitCode, JobError
from operators import schema as S
from operators.io.files import StorageOptions, is_remote, join, make_local_atomic, open_fs
from operators.io.write_outputs import CLIPS_DIR, MOMENTS_DIR, SEGMENTS_DIR, TIMELINES_DIR
from pipelines.report import lanes, pages
from pipelines.report.media import Media, prepare_media
from pipelines.report.read import USABLE, OutputFolder, Session

logger = logging.getLogger("emoray.report")

PAGES_DIR = "clips"
EXPORTS = ("timeline.csv", "moments.csv", "segments.csv")


class ReportFolder:
    """Where the report goes: a local folder or an object-store prefix."""

    def __init__(self, uri: str, storage_options: StorageOptions):
        self.uri = uri.rstrip("/")
        self.local = not is_remote(uri)
        self.fs, self.root = open_fs(self.uri, storage_options)

    def local_path(self, rel: str) -> Path:
        return Path(self.root) / rel

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _atomic(self, rel: str, write: Callable[[Path], object]) -> None:
        """Make the local file ``rel`` with ``write(tmp)`` and a rename, so a reader (a
        browser reloading, a static host) never sees half a page or half a video."""
        make_local_atomic(self.local_path(rel), write)

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.local:
            self._atomic(rel, lambda tmp: tmp.write_bytes(data))
        else:  # one PUT: the object appears whole or not at all
            self.fs.pipe_file(self._path(rel), data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def read_text(self, rel: str) -> str | None:
        try:
            with self.fs.open(self._path(rel), "rb") as f:
                return f.read().decode("utf-8")
        except FileNotFoundError:
            return None

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._path(rel))

    def put(self, src: Path, rel: str) -> None:
        """Copy the local file ``src`` to ``rel``."""
        if self.local:
            self._atomic(rel, lambda tmp: shutil.copyfile(src, tmp))
        else:
            self.fs.put_file(str(src), self._path(rel))


@dataclass
class ReportResult:
    """What a report run wrote: the folder, the sessions listed, and the HTML written this
    time (path relative to the report folder → text; the nightly run logs it to MLflow)."""

    report_dir: str
    sessions: int
    with_problems: int
    html: dict[str, str] = field(default_factory=dict)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _clock(seconds: float | None) -> str:
    if not _present(seconds):
        return "—"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}" if whole >= 3600 else \
        f"{whole // 60}:{whole % 60:02d}"


def _percent(value) -> str:
    return f"{100 * value:.0f} %" if _present(value) else "—"


def _name(session: Session) -> str:
    return PurePosixPath(session.uri).name if session.uri else session.clip_id


def _moment_counts(session: Session) -> tuple[int | None, str]:
    if session.moments is None:
        return None, "—"
    counts = session.moments[S.KIND].value_counts()
    detail = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    total = int(counts.sum())
    return total, f"{total} ({detail})" if total else "0"


def _task_count(session: Session) -> int | None:
    if session.segments is None or S.TASK not in session.segments.columns:
        return None
    return int(session.segments[S.TASK].dropna().nunique())


def _summary(session: Session) -> dict:
    """The session's index row as values (the xlsx sheet) ."""
    clip = session.clip or {}
    moments, _ = _moment_counts(session)
    return {"recording": _name(session), "clip_id": session.clip_id, "uri": session.uri,
            **{c: clip.get(c) for c in S.METADATA_COLUMNS},
            "tasks": _task_count(session), "duration_s": clip.get(S.DURATION_S),
            "status": session.status,
            "error": "; ".join(p for p in [clip.get(S.ERROR), *session.problems] if p) or None,
            S.FACE_COVERAGE: clip.get(S.FACE_COVERAGE),
            S.SPEECH_COVERAGE: clip.get(S.SPEECH_COVERAGE),
            S.DOMINANT_EMOTION: clip.get(S.DOMINANT_EMOTION), "moments": moments}


def _index_row(session: Session, summary: dict, href: str | None) -> dict:
    clip = session.clip or {}
    _, moments_text = _moment_counts(session)

    def cell(value, key=None, link=None):
        shown = "—" if not _present(value) else str(value)
        return (shown, "" if key is None and shown == "—" else (key if key is not None
                                                                 else shown), link)

    tasks = summary["tasks"]
    return {"cells": [
        cell(summary["recording"], link=href),
        cell(clip.get(S.PARTICIPANT)), cell(clip.get(S.STUDY)),
        cell(tasks, tasks if tasks is not None else ""),
        cell(_clock(summary["duration_s"]), summary["duration_s"]
             if _present(summary["duration_s"]) else ""),
        cell(summary["status"]),
        cell(_percent(clip.get(S.FACE_COVERAGE)), clip.get(S.FACE_COVERAGE)
             if _present(clip.get(S.FACE_COVERAGE)) else ""),
        cell(_percent(clip.get(S.SPEECH_COVERAGE)), clip.get(S.SPEECH_COVERAGE)
             if _present(clip.get(S.SPEECH_COVERAGE)) else ""),
        cell(clip.get(S.DOMINANT_EMOTION) or "uncertain" if summary["status"] in USABLE
             else None),
        cell(moments_text, summary["moments"] if summary["moments"] is not None else ""),
    ], "status_ok": summary["status"] == S.Status.OK.value, "error": summary["error"]}


def _csv_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """List columns (box, MFCCs) as JSON arrays, timestamps as ISO text."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object and frame[column].map(
                lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            frame[column] = frame[column].map(
                lambda v: json.dumps([float(x) for x in v]) if v is not None else None)
    return frame


def _write_csv(folder: ReportFolder, rel: str, frame: pd.DataFrame) -> None:
    folder.write_text(rel, _csv_ready(frame).to_csv(index=False))


def _facts(session: Session) -> list[tuple[str, str]]:
    clip = session.clip or {}
    facts = [("Recording", session.uri or "unknown (no clip row)"),
             ("Clip id", session.clip_id), ("Status", session.status)]
    if clip.get(S.ERROR):
        facts.append(("Error", clip[S.ERROR]))
    if clip.get(S.WARNINGS):
        facts.append(("Warnings", "; ".join(clip[S.WARNINGS])))
    facts += [(label, str(clip[c])) for label, c in (
        ("Participant", S.PARTICIPANT), ("Study", S.STUDY), ("Session", S.SESSION),
        ("Recorded", S.RECORDED_AT)) if _present(clip.get(c))]
    if clip and clip[S.STATUS] in USABLE:
        facts += [("Duration", _clock(clip.get(S.DURATION_S))),
                  ("Face coverage", _percent(clip.get(S.FACE_COVERAGE))),
                  ("Speech coverage", _percent(clip.get(S.SPEECH_COVERAGE))),
                  ("Dominant emotion", clip.get(S.DOMINANT_EMOTION) or "uncertain")]
        if clip.get(S.PARTICIPANT_REASON):
            facts.append(("Participant chosen", clip[S.PARTICIPANT_REASON]))
        if clip.get(S.FACE_MODEL):
            facts.append(("Face model", clip[S.FACE_MODEL]))
    return facts


def _session_page(output: OutputFolder, folder: ReportFolder, session: Session,
                  storage_options: StorageOptions, max_points: int) -> str:
    """Write the session's media, exports and page; returns the page's HTML."""
    timeline = output.timeline(session)
    base = f"{PAGES_DIR}/{session.clip_id}"
    exports = []
    if timeline is not None:
        _write_csv(folder, f"{base}/timeline.csv", timeline)
        exports.append(f"{session.clip_id}/timeline.csv")
    for name, frame in (("moments.csv", session.moments), ("segments.csv", session.segments)):
        if frame is not None:
            _write_csv(folder, f"{base}/{name}", frame)
            exports.append(f"{session.clip_id}/{name}")
    media: Media = prepare_media(session, folder, storage_options)
    data = None
    if timeline is not None and len(timeline):
        duration = (session.clip or {}).get(S.DURATION_S)
        data = {**lanes.lanes(timeline, duration, max_points),
                "moments": lanes.moments(session.moments),
                "has_moments": session.moments is not None,
                "emotions": list(S.EMOTIONS)}
    problems = list(session.problems)
    clip = session.clip or {}
    if clip and clip[S.STATUS] not in USABLE:
        problems.insert(0, f"The job could not analyse this recording ({clip[S.STATUS]}): "
                           f"{clip.get(S.ERROR) or 'no detail recorded'}")
    elif timeline is not None and not len(timeline):
        problems.append("The timeline file has no rows.")
    return pages.session_page(_name(session), _facts(session), problems, media.path,
                              media.note, exports, data)


def _folder_notes(output: OutputFolder, ids: list[str]) -> list[str]:
    notes = []
    if not output.has(CLIPS_DIR) and not output.has(TIMELINES_DIR):
        notes.append(f"No sessions: {output.out} has no {CLIPS_DIR}/ or {TIMELINES_DIR}/ "
                     "folder. Is it the OUT folder of `emoray run`?")
    elif not ids:
        notes.append(f"No sessions: {output.out} has no clip rows or timelines yet.")
    elif not output.has(TIMELINES_DIR):
        notes.append(f"{output.out} has no {TIMELINES_DIR}/ folder: no clip has a timeline "
                     "(each session's status says why).")
    if ids and not output.has(MOMENTS_DIR):
        notes.append(f"This output has no {MOMENTS_DIR}/ or {SEGMENTS_DIR}/ (findings): the "
                     "pages show the timeline without moments.")
    return notes


def _excel_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Times in UTC without their zone (Excel keeps none), lists as JSON text."""
    frame = _csv_ready(frame)
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype) or (
                values.dtype == object and values.map(lambda v: isinstance(v, datetime)).any()):
            frame[column] = pd.to_datetime(values, utc=True).dt.tz_localize(None)
    return frame


def _sessions_xlsx(summaries: list[dict], moments: list[pd.DataFrame]) -> bytes:
    every = pd.concat([m for m in moments if len(m)], ignore_index=True) if any(
        len(m) for m in moments) else pd.DataFrame(columns=S.MOMENT_SCHEMA.names)
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as book:
        _excel_ready(pd.DataFrame(summaries)).to_excel(book, sheet_name="sessions", index=False)
        _excel_ready(every).to_excel(book, sheet_name="moments", index=False)
    return buffer.getvalue()


def build_report(out: str, report_dir: str, storage_options: StorageOptions, *,
                 clip_ids: Iterable[str] | None = None, refresh: Iterable[str] | None = None,
                 max_points: int = lanes.MAX_POINTS) -> ReportResult:
    """Write the report of ``out`` into ``report_dir`` (see module doc).

    ``clip_ids``: only these sessions (default: every clip of ``out``).  ``refresh``: write
    the pages, media and exports of only these sessions (default: all listed); the index
    and ``sessions.xlsx`` always cover every listed session, linking the pages already in
    ``report_dir``.  Raises :class:`~infra.storage.InputError` when ``out`` is not there,
    ``ValueError`` for an unknown clip id and :class:`~infra.preflight.JobError` (exit 4)
    when ``report_dir`` cannot be written; a damaged output is reported on its pages, not
    raised."""
    output = OutputFolder(out, storage_options)
    folder = ReportFolder(report_dir, storage_options)
    ids = output.clip_ids()
    if clip_ids is not None:
        wanted = list(dict.fromkeys(clip_ids))
        unknown = sorted(set(wanted) - set(ids))
        if unknown:
            raise ValueError(f"no clip {', '.join(unknown)} in {out} (clip ids are the file "
                             f"names in {join(out, CLIPS_DIR)})")
        ids = wanted
    todo = set(ids if refresh is None else refresh) & set(ids)
    try:  # the first write: a folder that cannot be written ends here, with its reason
        for name in pages.STATIC_FILES:
            folder.write_bytes(f"{pages.STATIC_DIR}/{name}",
                               (pages.STATIC_SOURCE / name).read_bytes())
    except OSError as exc:
        raise JobError(ExitCode.OUTPUT, [f"cannot write the report to {folder.uri}: "
                                         f"{exc.strerror or exc}"]) from exc
    result = ReportResult(folder.uri, len(ids), 0)
    rows, summaries, moments = [], [], []
    for clip_id in tqdm(ids, desc="report", unit="session", disable=None):
        session = output.session(clip_id)
        page = f"{PAGES_DIR}/{clip_id}.html"
        if clip_id in todo:
            html = _session_page(output, folder, session, storage_options, max_points)
            folder.write_text(page, html)
            result.html[page] = html
        summary = _summary(session)
        summaries.append(summary)
        rows.append(_index_row(session, summary, page if clip_id in todo or
                               folder.exists(page) else None))
        if session.moments is not None:
            moments.append(session.moments.assign(**{S.URI: session.uri}))
        if session.problems:
            result.with_problems += 1
            logger.warning("%s: %s", _name(session), "; ".join(session.problems))
    notes = _folder_notes(output, ids)
    for note in notes:
        logger.warning("%s", note)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    index = pages.index_page(output.out, rows, notes, generated)
    folder.write_text("index.html", index)
    result.html["index.html"] = index
    folder.write_bytes("sessions.xlsx", _sessions_xlsx(summaries, moments))
    logger.info("report of %d session(s) in %s (%d page(s) written, %d with problems)",
                len(ids), join(folder.uri, "index.html"), len(result.html) - 1,
                result.with_problems)
    return result


REPORT_DIR = "report"  # the nightly run's report, inside its output: OUT/report


def refresh_output_report(out: str, storage_options: StorageOptions,
                          clip_ids: Iterable[str]) -> ReportResult | None:
    """The nightly run's report: ``OUT/report`` with the pages of ``clip_ids`` (the clips
    the run processed) made again and the index of every clip, its HTML logged as
    artifacts (``report/…``) of the active MLflow run, if any.  None when no clip was
    processed (the report stays as it was)."""
    ids = list(clip_ids)
    if not ids:
        return None
    result = build_report(out, join(out, REPORT_DIR), storage_options, refresh=ids)
    if mlflow.active_run() is not None:
        # The pages with their script and style (the recordings stay in OUT/report/media:
        # too large for the tracking store), and where the whole report is.
        for path, html in result.html.items():
            mlflow.log_text(html, f"{REPORT_DIR}/{path}")
        for name in pages.STATIC_FILES:
            mlflow.log_text((pages.STATIC_SOURCE / name).read_text(encoding="utf-8"),
                            f"{REPORT_DIR}/{pages.STATIC_DIR}/{name}")
        mlflow.set_tag("emoray.report", join(result.report_dir, "index.html"))
    return result
