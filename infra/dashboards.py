"""Nightly dashboards: each run's numbers in MLflow, a daily summary table, and its plots.

The MLflow UI is the dashboard: experiment ``nightly`` has one run per nightly run with the
metrics of :func:`run_summary`, the models as tags, and as artifacts the run's clips table,
the daily summary (``daily_summary.parquet``) and two plots made from it
(``emotion_share_per_day.png``, ``failures_per_day.png``).  The daily summary lives next to
the outputs (``OUT/summary/daily.parquet``, one row per run, appended), so it outlives any
tracking server and opens in pandas or DuckDB.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from operators import schema as S
from operators.io.files import StorageOptions, join, open_fs, write_parquet_atomic

logger = logging.getLogger(__name__)

SUMMARY_DIR = "summary"
# Statuses whose clips have no timeline at all: counted as failures per day.
FAILED_STATUSES = frozenset({S.Status.FAILED.value, S.Status.READ_ERROR.value,
                             S.Status.DECODE_ERROR.value, S.Status.NOT_VIDEO.value,
                             S.Status.EMPTY_FILE.value})
COLORS = ["#d62728", "#8c564b", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e", "#7f7f7f"]

DAILY_SCHEMA = pa.schema([
    pa.field("date", pa.date32()),
    pa.field(S.RUN_ID, pa.string()),
    pa.field("started_at", pa.timestamp("us", tz="UTC")),
    pa.field("clips_listed", pa.int64()),
    pa.field("clips_processed", pa.int64()),
    pa.field("clips_new", pa.int64()),
    pa.field("clips_changed", pa.int64()),
    pa.field("clips_model_changed", pa.int64()),
    pa.field("clips_retried", pa.int64()),
    pa.field("clips_ok", pa.int64()),
    pa.field("clips_failed", pa.int64()),
    pa.field("video_hours", pa.float64()),
    pa.field("wall_seconds", pa.float64()),
    pa.field("realtime_factor", pa.float64()),
    pa.field("faces_found", pa.int64()),
    # Windows of the participant with a dominant emotion: the weight of this run's shares
    # when runs of a day are combined.
    pa.field("face_windows", pa.float64()),
    *[pa.field(c, pa.float64()) for c in S.SHARE_COLUMNS],
])
"""``OUT/summary/daily.parquet``: one row per nightly run."""


def daily_uri(out: str) -> str:
    return join(out, SUMMARY_DIR, "daily.parquet")


def stage_seconds(ds: Any) -> dict[str, float]:
    """Task wall seconds per Ray Data operator of an executed dataset, summed over tasks.
    Ray exposes these only as a report string (``ds.stats()``) or through the summary
    object behind it, which is what this reads."""
    seconds: dict[str, float] = {}
    pending = [ds._get_stats_summary()]
    while pending:
        summary = pending.pop()
        pending.extend(summary.parents)
        for op in summary.operators_stats:
            if op.wall_time is not None:
                name = re.sub(r"[^A-Za-z0-9_.-]+", "_", op.operator_name).strip("_")
                seconds[name] = seconds.get(name, 0.0) + float(op.wall_time.sum)
    return seconds


def run_summary(clips: pd.DataFrame, *, run_id: str, started_at: datetime, listed: int,
                reasons: Mapping[str, int], wall_s: float) -> dict[str, Any]:
    """The run's row of the daily summary (``DAILY_SCHEMA``), from the clip rows it wrote.

    Emotion shares are the participant's windows per dominant emotion over all clips of
    the run (clip shares weighted by the clip's windows with a face)."""
    status = clips[S.STATUS] if len(clips) else pd.Series(dtype=str)
    video_s = float(clips[S.DURATION_S].fillna(0).sum()) if len(clips) else 0.0
    shares = clips[list(S.SHARE_COLUMNS)].astype(float) if len(clips) else pd.DataFrame(
        columns=list(S.SHARE_COLUMNS))
    has_shares = shares.notna().all(axis=1) & (shares.sum(axis=1) > 0)
    weights = (clips[S.WINDOWS].astype(float) * clips[S.FACE_COVERAGE].astype(float)
               ).where(has_shares, 0.0).fillna(0.0) if len(clips) else pd.Series(dtype=float)
    total = float(weights.sum())
    row: dict[str, Any] = {
        "date": started_at.date(), S.RUN_ID: run_id, "started_at": started_at,
        "clips_listed": listed, "clips_processed": len(clips),
        "clips_new": reasons.get("new", 0), "clips_changed": reasons.get("changed", 0),
        "clips_model_changed": reasons.get("model changed", 0),
        "clips_retried": reasons.get("previously failed", 0),
        "clips_ok": int((status == S.Status.OK.value).sum()),
        "clips_failed": int(status.isin(FAILED_STATUSES).sum()),
        "video_hours": video_s / 3600, "wall_seconds": wall_s,
        "realtime_factor": video_s / wall_s if wall_s > 0 else 0.0,
        "faces_found": int(clips[S.FACE_TRACKS].fillna(0).sum()) if len(clips) else 0,
        "face_windows": total,
    }
    for col in S.SHARE_COLUMNS:
        row[col] = float((shares[col].fillna(0) * weights).sum() / total) if total else None
    return row


def append_daily(out: str, storage_options: StorageOptions, row: Mapping[str, Any]
                 ) -> pd.DataFrame:
    """Add the run's row to ``OUT/summary/daily.parquet`` (replacing a row of the same run)
    and return the whole table.  Call under the output's lease: read-modify-write."""
    uri = daily_uri(out)
    fs, path = open_fs(uri, storage_options)
    new = pa.Table.from_pylist([dict(row)], schema=DAILY_SCHEMA).to_pandas()
    if fs.exists(path):
        old = pq.read_table(path, filesystem=fs, schema=DAILY_SCHEMA).to_pandas()
        daily = pd.concat([old[old[S.RUN_ID] != row[S.RUN_ID]], new], ignore_index=True)
    else:
        daily = new
    write_parquet_atomic(pa.Table.from_pandas(daily, schema=DAILY_SCHEMA, preserve_index=False),
                         uri, storage_options)
    return daily


def per_day(daily: pd.DataFrame) -> pd.DataFrame:
    """Runs combined per date: clip counts summed, shares weighted by face windows."""
    frame = daily.copy()
    weighted = [f"w_{c}" for c in S.SHARE_COLUMNS]
    for col, wcol in zip(S.SHARE_COLUMNS, weighted, strict=True):
        frame[wcol] = frame[col].fillna(0) * frame["face_windows"]
    days = frame.groupby("date").agg(
        clips_processed=("clips_processed", "sum"), clips_ok=("clips_ok", "sum"),
        clips_failed=("clips_failed", "sum"), face_windows=("face_windows", "sum"),
        **{w: (w, "sum") for w in weighted}).sort_index()
    for col, wcol in zip(S.SHARE_COLUMNS, weighted, strict=True):
        days[col] = np.where(days["face_windows"] > 0,
                             days[wcol] / days["face_windows"].where(days["face_windows"] > 0),
                             np.nan)
    return days.drop(columns=weighted)


def _day_axis(ax, days: pd.DataFrame) -> np.ndarray:
    x = np.arange(len(days))
    ax.set_xticks(x, [str(d) for d in days.index], rotation=30, ha="right")
    return x


def plot_emotion_share(days: pd.DataFrame, path: Path) -> None:
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    x = _day_axis(ax, days)
    bottom = np.zeros(len(days))
    for col, emotion, color in zip(S.SHARE_COLUMNS, S.EMOTIONS, COLORS, strict=True):
        values = days[col].fillna(0).to_numpy()
        ax.bar(x, values, bottom=bottom, color=color, label=emotion)
        bottom += values
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of participant windows")
    ax.set_title("Dominant emotion per day")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    fig.savefig(path, dpi=100)


def plot_failures(days: pd.DataFrame, path: Path) -> None:
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax = fig.subplots()
    x = _day_axis(ax, days)
    ax.bar(x, days["clips_ok"], color="#2ca02c", label="ok")
    ax.bar(x, days["clips_failed"], bottom=days["clips_ok"], color="#d62728",
           label="no timeline (failed, unreadable, not a video…)")
    ax.set_ylabel("clips processed")
    ax.set_title("Processed and failed clips per day")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def log_nightly_run(summary: Mapping[str, Any], daily: pd.DataFrame, clips: pd.DataFrame,
                    stages: Mapping[str, float], tags: Mapping[str, str]) -> None:
    """Log the run's metrics, tags and artifacts to the active MLflow run (none: no-op)."""
    if mlflow.active_run() is None:
        return
    metrics = {k: float(v) for k, v in summary.items()
               if k not in ("date", S.RUN_ID, "started_at") and v is not None}
    metrics.update({f"stage_seconds.{name}": value for name, value in stages.items()})
    mlflow.log_metrics(metrics)
    mlflow.set_tags(dict(tags))
    days = per_day(daily)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips.to_parquet(folder / "clips.parquet", index=False)
        daily.to_parquet(folder / "daily_summary.parquet", index=False)
        plot_emotion_share(days, folder / "emotion_share_per_day.png")
        plot_failures(days, folder / "failures_per_day.png")
        mlflow.log_artifacts(str(folder))
