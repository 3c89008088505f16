"""``emoray run INPUT --out OUT``: recordings in, per-clip emotion timelines out (Parquet).

Also runnable as ``python -m pipelines.emotion_timeline``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray

from infra import ray_cluster
from infra.logs import setup_logging
from infra.storage import InputError, clip_id_for, list_inputs
from infra.tracking import log_job_results, resolve_model_file, tracked_run
from models import face_emotion, fusion, voice_emotion
from operators import schema as S
from operators.io.files import is_remote
from operators.io.write_outputs import CLIPS_DIR, TIMELINES_DIR
from pipelines.emotion_timeline.build import ResolvedModels, build, make_writer
from pipelines.emotion_timeline.config import TimelineJobConfig, cli_overrides, load_config

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


def resolve_models(config: TimelineJobConfig, scratch: Path) -> ResolvedModels:
    """Fetch the configured models (files or MLflow URIs) and load each once on the driver,
    so a wrong file or mismatched feature sizes fail fast with a clear message."""
    face = face_emotion.load(None)
    face_name, face_bytes = face_emotion.DEFAULT_MODEL, None
    if config.face_model is not None:
        path = resolve_model_file(config.face_model, config.tracking, scratch / "face")
        face = face_emotion.load(path)
        face_name, face_bytes = f"{face.name} ({config.face_model})", path.read_bytes()
    if config.fusion == "face_only":
        return ResolvedModels(face_name, face_bytes)
    if config.voice_model is None:
        voice_path = voice_emotion.DEFAULT_WEIGHTS
    else:
        voice_path = resolve_model_file(config.voice_model, config.tracking, scratch / "voice")
    voice = voice_emotion.load(voice_path)
    if config.fusion == "product":
        return ResolvedModels(f"{face_name} + {voice.name} (product rule)", face_bytes,
                              voice_path.read_bytes(), fusion="product")
    fusion_path = resolve_model_file(config.fusion_model, config.tracking, scratch / "fusion")
    fused = fusion.load(fusion_path)
    given = (face.feature_dim, voice.config.embed_dim)
    if fused.input_dims != given:
        raise ValueError(f"fusion model expects face/voice features of {fused.input_dims}, "
                         f"the face and voice models give {given}")
    return ResolvedModels(f"{face_name} + {voice.name} + {fused.name}", face_bytes,
                          voice_path.read_bytes(), fusion_path.read_bytes(), fusion="learnt")


def run(input_spec: str, out: str, config: TimelineJobConfig) -> JobResult:
    """Run the job; every input ends as exactly one row of the returned clips table."""
    started = time.perf_counter()
    if not is_remote(out):
        out = str(Path(out).resolve())
    inputs = list_inputs(input_spec, config.storage, S.VIDEO_EXTENSIONS)
    logger.info("%d recording(s) from %s -> %s", len(inputs), input_spec, out)
    with tempfile.TemporaryDirectory(prefix="emoray-model-") as scratch:
        models = resolve_models(config, Path(scratch))
    owns_ray = ray_cluster.connect(
        config.address, config.num_cpus,
        object_store_bytes=int(config.resources.local_object_store_gib * 2**30))
    try:
        params = {"input": input_spec, "out": out, **config.model_dump(mode="json")}
        with tracked_run(config.tracking, "timeline", params) as run_id:
            ds = build(config, inputs, out, run_id=run_id, models=models,
                       gpus=ray_cluster.cluster_has_gpus(),
                       cpus=ray.cluster_resources().get("CPU", 1.0))
            _, clips = execute(ds, inputs, make_writer(config, out, run_id, models))
            wall = time.perf_counter() - started
            video = float(clips[S.DURATION_S].fillna(0).sum())
            result = JobResult(clips=clips, run_id=run_id, wall_s=wall, video_s=video,
                               stage_stats=ds.stats())
            counts = clips[S.STATUS].value_counts()
            log_job_results(
                {"clips": len(clips), "clips_ok": int(counts.get(S.Status.OK.value, 0)),
                 "clips_failed": int(sum(v for k, v in counts.items() if k not in _USABLE)),
                 "video_seconds": video, "wall_seconds": wall,
                 "realtime_factor": result.realtime_factor},
                {"clips": clips},
            )
    finally:
        if owns_ray:
            ray.shutdown()
    return result


# Statuses whose clips still have a timeline (possibly without one modality).
_USABLE = {S.Status.OK.value, S.Status.NO_FACE.value, S.Status.NO_AUDIO.value,
           S.Status.PARTIAL.value}


def execute(ds: ray.data.Dataset, inputs, writer) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the job's dataset; returns the clip rows its workers wrote, and those plus a
    `failed` row (written by ``writer``) for every input whose work failed on every retry."""
    with ray_cluster.BlockErrors() as dropped:
        written = ds.to_pandas()
    return written, _record_failures(inputs, written, writer, dropped.errors)


def _record_failures(inputs, clips: pd.DataFrame, writer,
                     dropped: list[ray_cluster.BlockError]) -> pd.DataFrame:
    """Give every input without a clip row (its work failed on every retry) a `failed` row
    naming the reason, so each input ends in exactly one terminal status."""
    if clips[S.URI].duplicated().any():
        raise RuntimeError(f"duplicate clip rows: {clips[S.URI][clips[S.URI].duplicated()]}")
    done = set(clips[S.URI]) if len(clips) else set()
    missing = [ref for ref in inputs if ref.uri not in done]
    if missing and len(missing) == len(inputs) > 1:
        raise RuntimeError("every clip failed in the workers: that is a bug or an "
                           "infrastructure fault, not bad input (see the Ray logs above)")
    reason = failure_reason(dropped)
    rows = []
    for ref in missing:
        logger.error("%s: no result after retries (%s); recording it as failed", ref.uri, reason)
        rows.append(writer.write_failed(clip_id_for(ref.uri), ref.uri, reason))
    if not rows:
        return clips
    failed = pd.DataFrame(rows)
    return pd.concat([clips, failed], ignore_index=True) if len(clips) else failed


# What a killed worker looks like to the driver, in a user's words.
_WORKER_DIED = ("WorkerCrashedError", "OutOfMemoryError", "NodeDiedError")


def failure_reason(dropped: list[ray_cluster.BlockError]) -> str:
    """The `failed` message: which stages' task failed on every retry and with what.  A lost
    task's error does not name its clip, so the errors are the run's: exact when every
    dropped block failed alike, else listed as the candidates."""
    head = "processing failed on every retry"
    if not dropped:
        return f"{head}; no error reached the driver (see the Ray logs)"
    described = list(dict.fromkeys(error.describe() for error in dropped))
    hint = ""
    if any(error.error_type in _WORKER_DIED for error in dropped):
        hint = (" (the worker process died: killed, out of memory, or a crash in native code "
                "such as a decoder)")
    if len(described) == 1:
        return f"{head}{hint}: {described[0]}"
    shown = "; ".join(described[:3]) + (f"; and {len(described) - 3} more"
                                         if len(described) > 3 else "")
    return f"{head}{hint}; this run's failed tasks: {shown}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="file, folder, glob, s3://bucket/prefix, or a manifest "
                                      "(.txt/.lst one URI per line, .csv with a 'uri' column)")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix")
    parser.add_argument("--config", help="YAML config (see README)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. "
                        "decode.sample_fps=10 (repeatable)")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: local sqlite "
                                               "in ./mlruns)")
    parser.add_argument("--face-model", help="face model: .pt/TorchScript file or MLflow URI "
                                             "(models:/NAME@ALIAS)")
    parser.add_argument("--fusion", choices=("product", "learnt", "face_only"),
                        help="how face and voice combine (default product: face × voice "
                             "probabilities; learnt needs --set fusion_model=...; face_only "
                             "runs no voice model)")
    parser.add_argument("--voice-model", help="voice model: .pt/TorchScript file or MLflow URI "
                                              "(default: the shipped RAVDESS network)")


def run_from_args(args: argparse.Namespace) -> int:
    overrides = cli_overrides(args, {
        "address": "address", "tracking_uri": "tracking.uri", "face_model": "face_model",
        "fusion": "fusion", "voice_model": "voice_model"})
    try:
        config = load_config(args.config, overrides)
        result = run(args.input, args.out, config)
    except (InputError, ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("%s", result.summary_line())
    out = args.out if is_remote(args.out) else str(Path(args.out).resolve())
    logger.info("timelines: %s/%s/  clips: %s/%s/  (MLflow run %s)", out, TIMELINES_DIR,
                out, CLIPS_DIR, result.run_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emoray run", description=__doc__)
    add_arguments(parser)
    setup_logging()
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
