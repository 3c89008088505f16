"""The emotion-timeline job (``emoray run``): every input → one clip row and, when it has
one, a timeline; one MLflow run per job.  The job runner (``pipelines/runner.py``) does the
preflight, the listing, the models and the execution; this adds the tracking."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial

import pandas as pd

from infra.tracking import log_job_results, tracked_run
from operators import schema as S
from pipelines import runner
from pipelines.emotion_timeline.build import build
from pipelines.emotion_timeline.config import TimelineJobConfig

logger = logging.getLogger("emoray.run")


@dataclass(frozen=True)
class JobResult:
    """What a run did: the clip rows it wrote and its headline numbers."""

    clips: pd.DataFrame
    run_id: str
    wall_s: float
    video_s: float
    stage_stats: str  # Ray Data's per-operator timing report of this execution

    @property
    def realtime_factor(self) -> float:
        return self.video_s / self.wall_s if self.wall_s > 0 else 0.0

    def summary_line(self) -> str:
        counts = self.clips[S.STATUS].value_counts()
        detail = ", ".join(f"{status}={n}" for status, n in counts.items())
        return (f"clips: {len(self.clips)} ({detail}) | video {self.video_s:.1f} s | "
                f"wall {self.wall_s:.1f} s | {self.realtime_factor:.1f}x real time")


# Statuses whose clips still have a timeline (possibly without one modality).
_USABLE = {S.Status.OK.value, S.Status.NO_FACE.value, S.Status.NO_AUDIO.value,
           S.Status.PARTIAL.value}


def run(input_spec: str, out: str, config: TimelineJobConfig) -> JobResult:
    """Run the job; every input ends as exactly one row of the returned clips table.
    Failures raise (``pipelines.runner.classify`` gives their exit codes)."""
    started = time.perf_counter()
    job = runner.start(input_spec, out, config)
    logger.info("%d recording(s) from %s -> %s", len(job.inputs), input_spec, job.out)
    params = {"input": input_spec, "out": job.out, **config.model_dump(mode="json")}
    with tracked_run(config.tracking, "timeline", params) as run_id:
        done = runner.execute_plan(job, job.inputs, run_id,
                                   partial(build, config, job.inputs, models=job.models))
        clips = done.clips
        wall = time.perf_counter() - started
        video = float(clips[S.DURATION_S].fillna(0).sum())
        result = JobResult(clips=clips, run_id=run_id, wall_s=wall, video_s=video,
                           stage_stats=done.stage_stats)
        counts = clips[S.STATUS].value_counts()
        log_job_results(
            {"clips": len(clips), "clips_ok": int(counts.get(S.Status.OK.value, 0)),
             "clips_failed": int(sum(v for k, v in counts.items() if k not in _USABLE)),
             "video_seconds": video, "wall_seconds": wall,
             "realtime_factor": result.realtime_factor},
            {"clips": clips},
        )
    return result
