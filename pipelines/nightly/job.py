"""The nightly job (``emoray nightly``): the timeline job on what is new or due since the
last run, under the output's lease.  The job runner (``pipelines/runner.py``) does the
preflight, the listing, the models and the execution; this adds the plan, the lease, the
state records and the dashboards."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import pandas as pd

from infra.dashboards import append_daily, log_nightly_run, run_summary
from infra.lease import Lease, lease_dir
from infra.tracking import log_job_results, tracked_run
from operators import schema as S
from operators.io.write_outputs import moment_counts
from pipelines import runner
from pipelines.emotion_timeline.build import make_writer
from pipelines.emotion_timeline.job import start
from pipelines.emotion_timeline.sessions import clip_contexts
from pipelines.nightly.build import StateRecorder, build
from pipelines.nightly.config import NightlyJobConfig
from pipelines.nightly.state import Plan, Recording, compact, make_plan, read_state
from pipelines.report.build import refresh_output_report

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
    """One nightly run (see ``pipelines/nightly/__main__.py``).  Raises
    :class:`~infra.lease.LeaseHeldError` when another run holds the output,
    :class:`~infra.lease.LeaseLostError` when this run's lease was taken over, and what
    :func:`pipelines.emotion_timeline.job.start` and :func:`pipelines.runner.execute_plan`
    raise."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    job = start(input_spec, out, config, dry_run=dry_run)
    options = config.storage.storage_options()
    recordings = [Recording(ref) for ref in job.inputs]

    def plan_now() -> Plan:
        return make_plan(recordings, read_state(job.out, options), job.models.identity,
                         since=since, limit=limit, retry_statuses=config.nightly.retry_statuses)

    if dry_run:
        return NightlyResult(plan_now(), pd.DataFrame(), None, time.perf_counter() - started,
                             None)
    with Lease(lease_dir(job.out), options, ttl_s=config.nightly.lease_ttl_s,
               what=job.out) as lease:
        # Planned under the lease: a run that finished a moment ago is seen.
        plan = plan_now()
        logger.info("%d recording(s) listed; %d to process %s, %d up to date, %d deferred",
                    len(recordings), len(plan.selected), plan.counts(), plan.up_to_date,
                    len(plan.deferred))
        params = {"input": input_spec, "out": job.out, "since": since, "limit": limit,
                  **config.model_dump(mode="json")}
        with tracked_run(config.tracking, "nightly", params) as run_id:
            clips, stages = _process(job, plan, run_id)
            wall = time.perf_counter() - started
            summary = run_summary(clips, run_id=run_id, started_at=started_at,
                                  listed=len(recordings), reasons=plan.counts(), wall_s=wall)
            lease.check()
            daily = append_daily(job.out, options, summary)
            log_nightly_run(summary, daily, clips, stages, tags={
                "emoray.model_identity": job.models.identity,
                "emoray.face_model": job.models.face_name,
                "emoray.input": input_spec, "emoray.out": job.out})
            # moments found in this run's clips, per kind (README: Findings)
            log_job_results({f"moments_{kind}": float(n) for kind, n in moment_counts(
                job.out, clips[S.CLIP_ID], options).items()}, {})
            compact(job.out, options)
            # OUT/report: the processed clips' pages again, the index of all; its HTML
            # becomes artifacts of this run.
            refresh_output_report(job.out, options, clips[S.CLIP_ID])
    return NightlyResult(plan, clips, run_id, time.perf_counter() - started, summary)


def _process(job: runner.Job, plan: Plan, run_id: str) -> tuple[pd.DataFrame, dict[str, float]]:
    """Run the pipeline on the selected recordings, recording each finished clip's state
    (the failed ones' too); returns their clip rows and per-stage seconds.  Nothing
    selected: no Ray at all."""
    if not plan.selected:
        return pd.DataFrame(columns=S.CLIP_SCHEMA.names), {}
    inputs = [p.recording.ref for p in plan.selected]
    # The writer's resources, so Ray fuses the recorder into the writer's task.
    recorder = StateRecorder(job.out, job.config.storage.storage_options(),
                             {p.recording.clip_id: p.recording.fingerprint
                              for p in plan.selected}, job.config.resources.writer)
    done = runner.execute_plan(
        job, inputs, make_writer(job.config, job.out, run_id, job.models),
        partial(build, job.config, inputs, models=job.models, recorder=recorder,
                contexts=clip_contexts(job.input_spec, job.inputs, job.config.storage,
                                       job.config.tasks)),
        after_write=(recorder,))
    return done.clips, done.stage_seconds
