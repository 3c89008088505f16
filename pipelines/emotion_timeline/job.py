"""The emotion-timeline job (``emoray run``): every input → one clip row and, when it has
one, a timeline; one MLflow run per job.  The job runner (``pipelines/runner.py``) does the
preflight, the listing and the execution; this module loads the timeline pipeline's models
(for ``emoray nightly`` too), makes the run's writer and tracks the run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from infra.registry import licence_line
from infra.tracking import log_job_results, resolve_model_file, tracked_run
from models import face_emotion, fusion, voice_emotion
from operators import schema as S
from pipelines import runner
from pipelines.emotion_timeline.build import ResolvedModels, build, make_writer
from pipelines.emotion_timeline.config import TimelineJobConfig
from pipelines.emotion_timeline.sessions import clip_contexts

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


def start(input_spec: str, out: str, config: TimelineJobConfig, *,
          dry_run: bool = False) -> runner.Job:
    """The runner's start (preflight, inputs) with this pipeline's models."""
    return runner.start(input_spec, out, config, partial(resolve_models, config),
                        model_sources=(config.face_model, config.voice_model,
                                       config.fusion_model), dry_run=dry_run)


def resolve_models(config: TimelineJobConfig, scratch: Path) -> ResolvedModels:
    """Fetch the configured models (files or MLflow URIs) and load each once on the driver,
    so a wrong file or mismatched feature sizes fail fast with a clear message."""
    face = face_emotion.load(None)
    face_name, face_bytes = face_emotion.DEFAULT_MODEL, None
    face_path = face_emotion.model.DEFAULT_WEIGHTS
    if config.face_model is not None:
        face_path = resolve_model_file(config.face_model, config.tracking, scratch / "face")
        face = face_emotion.load(face_path)
        face_name, face_bytes = f"{face.name} ({config.face_model})", face_path.read_bytes()
    # One line per model, once per run: the terms that come with the outputs it makes.
    logger.info("%s", licence_line("face", face_name, face_path))
    if config.fusion == "face_only":
        return ResolvedModels(face_name, face_bytes)
    if config.voice_model is None:
        voice_path = voice_emotion.DEFAULT_WEIGHTS
    else:
        voice_path = resolve_model_file(config.voice_model, config.tracking, scratch / "voice")
    voice = voice_emotion.load(voice_path)
    logger.info("%s", licence_line("voice", voice.name, voice_path))
    if config.fusion == "product":
        return ResolvedModels(f"{face_name} + {voice.name} (product rule)", face_bytes,
                              voice_path.read_bytes(), fusion="product")
    fusion_path = resolve_model_file(config.fusion_model, config.tracking, scratch / "fusion")
    fused = fusion.load(fusion_path)
    logger.info("%s", licence_line("fusion", fused.name, fusion_path))
    given = (face.feature_dim, voice.config.embed_dim)
    if fused.input_dims != given:
        raise ValueError(f"fusion model expects face/voice features of {fused.input_dims}, "
                         f"the face and voice models give {given}")
    return ResolvedModels(f"{face_name} + {voice.name} + {fused.name}", face_bytes,
                          voice_path.read_bytes(), fusion_path.read_bytes(), fusion="learnt")


# Statuses whose clips still have a timeline (possibly without one modality).
_USABLE = {S.Status.OK.value, S.Status.NO_FACE.value, S.Status.NO_AUDIO.value,
           S.Status.PARTIAL.value}


def run(input_spec: str, out: str, config: TimelineJobConfig) -> JobResult:
    """Run the job; every input ends as exactly one row of the returned clips table.
    Failures raise (``pipelines.runner.classify`` gives their exit codes)."""
    started = time.perf_counter()
    job = start(input_spec, out, config)
    logger.info("%d recording(s) from %s -> %s", len(job.inputs), input_spec, job.out)
    # metadata and task markers: a bad tasks file fails here, before any run is recorded
    contexts = clip_contexts(input_spec, job.inputs, config.storage, config.tasks)
    params = {"input": input_spec, "out": job.out, **config.model_dump(mode="json")}
    with tracked_run(config.tracking, "timeline", params) as run_id:
        writer = make_writer(config, job.out, run_id, job.models)
        done = runner.execute_plan(job, job.inputs, writer,
                                   partial(build, config, job.inputs, models=job.models,
                                           contexts=contexts))
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
