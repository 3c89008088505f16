"""``emoray nightly --input IN --out OUT``: process only what is new since the last run.

A recording is processed when it has no record in ``OUT/_state`` (new), its bytes changed
(S3 ETag/size, local size/mtime), the models changed (``model_identity``), or its last
status was a transient failure (``nightly.retry_statuses``).  One run at a time holds the
output's lease.  Each run is an MLflow run in experiment ``nightly`` (see
``infra/dashboards.py``).  Also runnable as ``python -m pipelines.nightly``.

Exit codes: 0 done (or nothing to do), 2 bad input or config, 3 another run holds the lease,
4 the lease was lost during the run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import ray

from infra import ray_cluster
from infra.dashboards import append_daily, log_nightly_run, run_summary, stage_seconds
from infra.lease import Lease, LeaseHeldError, LeaseLostError, lease_dir
from infra.logs import setup_logging
from infra.storage import InputError, list_inputs
from infra.tracking import tracked_run
from operators import schema as S
from operators.io.files import is_remote
from pipelines.emotion_timeline.__main__ import execute, resolve_models
from pipelines.emotion_timeline.build import make_writer
from pipelines.emotion_timeline.config import cli_overrides
from pipelines.nightly.build import build
from pipelines.nightly.config import NightlyJobConfig, load_nightly_config
from pipelines.nightly.state import (
    Plan,
    Recording,
    compact,
    make_plan,
    read_state,
    record,
    state_rows,
)

logger = logging.getLogger("emoray.nightly")


@dataclass(frozen=True)
class NightlyResult:
    """What a nightly run decided and did (``clips`` is empty for a dry run or no work)."""

    plan: Plan
    clips: pd.DataFrame
    run_id: str | None
    wall_s: float
    summary: dict | None  # the run's daily-summary row (None: dry run)

    def summary_line(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in self.plan.counts().items() if v)
        counts = self.clips[S.STATUS].value_counts() if len(self.clips) else {}
        statuses = ", ".join(f"{k}={v}" for k, v in counts.items())
        return (f"nightly: {len(self.plan.selected)} processed ({reasons or 'nothing due'})"
                f"{' -> ' + statuses if statuses else ''} | {self.plan.up_to_date} up to date"
                f" | {len(self.plan.deferred)} deferred by --limit | wall {self.wall_s:.1f} s")


def run(input_spec: str, out: str, config: NightlyJobConfig, *, since: datetime | None = None,
        limit: int | None = None, dry_run: bool = False) -> NightlyResult:
    """One nightly run (see module doc).  Raises :class:`LeaseHeldError` when another run
    holds the output, :class:`LeaseLostError` when this run's lease was taken over."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    if not is_remote(out):
        out = str(Path(out).resolve())
    options = config.storage.storage_options()
    recordings = [Recording(ref)
                  for ref in list_inputs(input_spec, config.storage, S.VIDEO_EXTENSIONS)]
    with tempfile.TemporaryDirectory(prefix="emoray-model-") as scratch:
        models = resolve_models(config, Path(scratch))

    def plan_now() -> Plan:
        return make_plan(recordings, read_state(out, options), models.identity, since=since,
                         limit=limit, retry_statuses=config.nightly.retry_statuses)

    if dry_run:
        return NightlyResult(plan_now(), pd.DataFrame(), None, time.perf_counter() - started,
                             None)
    with Lease(lease_dir(out), options, ttl_s=config.nightly.lease_ttl_s, what=out) as lease:
        # Planned under the lease: a run that finished a moment ago is seen.
        plan = plan_now()
        logger.info("%d recording(s) listed; %d to process %s, %d up to date, %d deferred",
                    len(recordings), len(plan.selected), plan.counts(), plan.up_to_date,
                    len(plan.deferred))
        params = {"input": input_spec, "out": out, "since": since, "limit": limit,
                  **config.model_dump(mode="json")}
        with tracked_run(config.tracking, "nightly", params) as run_id:
            clips, stages = _process(config, plan, out, run_id, models)
            wall = time.perf_counter() - started
            summary = run_summary(clips, run_id=run_id, started_at=started_at,
                                  listed=len(recordings), reasons=plan.counts(), wall_s=wall)
            lease.check()
            daily = append_daily(out, options, summary)
            log_nightly_run(summary, daily, clips, stages, tags={
                "emoray.model_identity": models.identity, "emoray.face_model": models.face_name,
                "emoray.input": input_spec, "emoray.out": out})
            compact(out, options)
    return NightlyResult(plan, clips, run_id, time.perf_counter() - started, summary)


def _process(config: NightlyJobConfig, plan: Plan, out: str, run_id: str, models
             ) -> tuple[pd.DataFrame, dict[str, float]]:
    """Run the pipeline on the selected recordings; returns their clip rows and per-stage
    seconds.  Nothing selected: no Ray at all."""
    if not plan.selected:
        return pd.DataFrame(columns=S.CLIP_SCHEMA.names), {}
    inputs = [p.recording.ref for p in plan.selected]
    fingerprints = {p.recording.clip_id: p.recording.fingerprint for p in plan.selected}
    owns_ray = ray_cluster.connect(
        config.address, config.num_cpus,
        object_store_bytes=int(config.resources.local_object_store_gib * 2**30))
    try:
        ds = build(config, inputs, out, run_id=run_id, models=models,
                   fingerprints=fingerprints, gpus=ray_cluster.cluster_has_gpus(),
                   cpus=ray.cluster_resources().get("CPU", 1.0))
        written, clips = execute(ds, inputs, make_writer(config, out, run_id, models))
        # Clips recorded as failed on the driver get their state record here.
        late = clips[~clips[S.CLIP_ID].isin(written[S.CLIP_ID])] if len(written) else clips
        record(out, config.storage.storage_options(),
               state_rows(late.to_dict("records"), fingerprints))
        return clips, stage_seconds(ds)
    finally:
        if owns_ray:
            ray.shutdown()


def _iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder, glob, s3://bucket/prefix or "
                                                       "manifest (as for emoray run)")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix")
    parser.add_argument("--since", type=_iso, help="only recordings modified at or after "
                        "this ISO time (UTC unless it has an offset), e.g. 2026-11-21T00:00")
    parser.add_argument("--limit", type=int, help="process at most N recordings (oldest "
                                                  "first); the next run takes the rest")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be processed and why; change nothing")
    parser.add_argument("--config", help="YAML config (the timeline job's keys + nightly.*)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, as "
                                          "set by `ray job submit`, else a local Ray)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI")


def print_plan(result: NightlyResult) -> None:
    plan = result.plan
    print(f"would process {len(plan.selected)} recording(s); {plan.up_to_date} up to date, "
          f"{len(plan.deferred)} beyond --limit, {plan.before_since} before --since")
    for item in plan.selected:
        print(f"  {item.reason:<17} {item.recording.ref.uri}  ({item.detail})")
    for item in plan.deferred:
        print(f"  {'deferred':<17} {item.recording.ref.uri}  ({item.reason}: beyond --limit)")


def run_from_args(args: argparse.Namespace) -> int:
    overrides = cli_overrides(args, {"address": "address", "tracking_uri": "tracking.uri"})
    if args.limit is not None and args.limit < 0:
        logger.error("--limit must be >= 0")
        return 2
    try:
        config = load_nightly_config(args.config, overrides)
        result = run(args.input, args.out, config, since=args.since, limit=args.limit,
                     dry_run=args.dry_run)
    except (InputError, ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    except LeaseHeldError as exc:
        logger.error("%s", exc)
        return 3
    except LeaseLostError as exc:
        logger.error("%s", exc)
        return 4
    if args.dry_run:
        print_plan(result)
        return 0
    logger.info("%s", result.summary_line())
    if result.run_id:
        logger.info("MLflow run %s (experiment %s)", result.run_id, config.tracking.experiment)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emoray nightly", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    setup_logging()
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
