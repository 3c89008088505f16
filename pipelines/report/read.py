"""Read a job's output folder (local or ``s3://``) for the report, one session at a time.

Nothing here raises on a damaged output: a clip row or timeline that is missing or cannot be
read becomes a :class:`Session` problem the pages show (a folder half-written by a job that
was stopped, a truncated file).  Only an output that cannot be listed at all raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from infra.storage import InputError
from operators import schema as S
from operators.io.files import StorageOptions, join, open_fs
from operators.io.write_outputs import CLIPS_DIR, MOMENTS_DIR, SEGMENTS_DIR, TIMELINES_DIR

logger = logging.getLogger("emoray.report")

# The job writes a clip's timeline before its clip row (operators/io/write_outputs.py), so
# a timeline without a clip row is a clip the job had not finished.
HALF_WRITTEN = ("the job did not finish this clip (its timeline is there, its clip row is "
                "not): run the job again on this recording")
# Statuses whose clips have a timeline (operators.schema.Status).
USABLE = {S.Status.OK.value, S.Status.NO_FACE.value, S.Status.NO_AUDIO.value,
          S.Status.PARTIAL.value}


@dataclass
class Session:
    """What the output holds of one clip.  ``clip`` is its clip row (``CLIP_SCHEMA``) or
    None; ``problems`` says, in words for the researcher, what is missing or unreadable."""

    clip_id: str
    clip: dict | None = None
    moments: pd.DataFrame | None = None  # MOMENT_SCHEMA rows; None: the output has none
    segments: pd.DataFrame | None = None  # SEGMENT_SCHEMA rows; None: the output has none
    problems: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str | None:
        return self.clip[S.URI] if self.clip else None

    @property
    def status(self) -> str:
        """The clip's terminal status, or what the report found instead of a clip row."""
        if self.clip:
            return self.clip[S.STATUS]
        return "incomplete" if HALF_WRITTEN in self.problems else "unreadable"


class OutputFolder:
    """A job's output: ``clips/``, ``timelines/`` and, when the job wrote them,
    ``moments/`` and ``segments/``, each one Parquet file per clip id."""

    def __init__(self, out: str, storage_options: StorageOptions):
        self.out = out.rstrip("/")
        self.fs, self.root = open_fs(self.out, storage_options)
        if not self.fs.isdir(self.root):
            raise InputError(f"no output folder at {out}: give the OUT of `emoray run`")

    def _ids(self, folder: str) -> set[str]:
        try:
            paths = self.fs.glob(f"{self.root}/{folder}/*.parquet")
        except FileNotFoundError:
            return set()
        return {PurePosixPath(p).name.removesuffix(".parquet") for p in paths}

    def has(self, folder: str) -> bool:
        return self.fs.isdir(f"{self.root}/{folder}")

    def clip_ids(self) -> list[str]:
        """Every clip with a clip row or a timeline, in a stable order."""
        return sorted(self._ids(CLIPS_DIR) | self._ids(TIMELINES_DIR))

    def _read(self, folder: str, clip_id: str) -> tuple[pa.Table | None, str | None]:
        """The table ``folder/<clip_id>.parquet``, or None and why not (None: absent)."""
        path = f"{self.root}/{folder}/{clip_id}.parquet"
        shown = join(self.out, folder, f"{clip_id}.parquet")
        try:
            with self.fs.open(path, "rb") as f:
                return pq.read_table(f), None
        except FileNotFoundError:
            return None, None
        except (pa.ArrowException, OSError) as exc:
            logger.warning("cannot read %s: %s", shown, exc)
            return None, (f"{shown} cannot be read ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())}): the output may be half-written; "
                          "run the job again on this recording")

    def session(self, clip_id: str) -> Session:
        """The clip row, moments and segments of ``clip_id`` (not its timeline: see
        :meth:`timeline`), with what is wrong with them."""
        session = Session(clip_id)
        table, problem = self._read(CLIPS_DIR, clip_id)
        if problem:
            session.problems.append(problem)
        elif table is None or table.num_rows == 0:
            session.problems.append(HALF_WRITTEN)
        else:
            session.clip = table.slice(0, 1).to_pylist()[0]
        for folder, attribute in ((MOMENTS_DIR, "moments"), (SEGMENTS_DIR, "segments")):
            if not self.has(folder):
                continue
            table, problem = self._read(folder, clip_id)
            if problem:
                session.problems.append(problem)
            setattr(session, attribute, table.to_pandas() if table is not None else
                    pd.DataFrame(columns=_SCHEMAS[folder].names))
        return session

    def timeline(self, session: Session) -> pd.DataFrame | None:
        """The clip's timeline rows (``TIMELINE_SCHEMA``), or None with the reason added to
        ``session.problems`` (a clip that failed has none, and says why in its error)."""
        table, problem = self._read(TIMELINES_DIR, session.clip_id)
        if problem:
            session.problems.append(problem)
            return None
        if table is None:
            if session.clip and session.status in USABLE:
                session.problems.append(
                    f"the timeline file {join(self.out, TIMELINES_DIR, session.clip_id)}"
                    ".parquet is missing although the clip ended "
                    f"'{session.status}': run the job again on this recording")
            return None
        return table.to_pandas()


_SCHEMAS = {MOMENTS_DIR: S.MOMENT_SCHEMA, SEGMENTS_DIR: S.SEGMENT_SCHEMA}
