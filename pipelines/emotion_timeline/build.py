"""The emotion-timeline job's data flow, on one screen.

    inputs ─ stage ─ probe ─ decode ─ [voice emotion] ─ voice features ─ detect faces ─┐
    (1 row/clip)  (fused: 1 task per clip)  (chunk rows)    face emotion ─────────────┘
          groupby clip ─ timeline (product rule | learnt fusion | face only) ─ write ─ clip rows
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import ray.data

from infra.storage import InputRef, clip_id_for
from models.face_emotion.model import DEFAULT_WEIGHTS
from operators import schema as S
from operators.audio.voice_emotion import VoiceEmotion, VoiceEmotionConfig
from operators.audio.voice_features import VoiceFeatures
from operators.batches import to_list_columns
from operators.fusion.build_timeline import make_timeline_fn
from operators.io.decode_frames import make_decode_fn
from operators.io.probe_media import make_probe_fn
from operators.io.stage_input import make_stage_fn
from operators.io.write_outputs import TimelineWriter, WriterConfig
from operators.resources import apply_map_batches
from operators.vision.detect_faces import DETECTOR_NAME, FaceDetector
from operators.vision.face_emotion import FaceEmotion, FaceEmotionConfig
from pipelines.emotion_timeline.config import TimelineJobConfig

_MAX_SHUFFLE_PARTITIONS = 64


@dataclass(frozen=True)
class ResolvedModels:
    """The models of a run, as checkpoint bytes read on the driver (face None: the shipped
    default; voice/fusion None: not used), so actors on any node load the same weights
    without shared storage.  ``fusion`` is the config's rule (``product``, ``learnt``,
    ``face_only``)."""

    face_name: str
    face_checkpoint: bytes | None = None
    voice_checkpoint: bytes | None = None
    fusion_checkpoint: bytes | None = None
    fusion: str = "face_only"

    @property
    def identity(self) -> str:
        """Names + a content hash of the weights and the fusion rule
        (``schema.MODEL_IDENTITY``): the same weights and rule give the same identity
        whichever file or registry alias they came from; another voice model or rule gives
        another identity."""
        face = self.face_checkpoint if self.face_checkpoint is not None else (
            DEFAULT_WEIGHTS.read_bytes())
        parts = [face, *(b for b in (self.voice_checkpoint, self.fusion_checkpoint) if b)]
        if self.fusion != "face_only":
            # Face-only identities stay what they were before the rule existed, so a nightly
            # output made face-only is not reprocessed for that alone.
            parts.append(self.fusion.encode())
        digest = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts))
        return f"{self.face_name}#{digest.hexdigest()[:16]}"


def input_rows(inputs: list[InputRef]) -> list[dict[str, Any]]:
    """The job's first rows: one per input, nothing known yet but its identity."""
    return [
        {S.CLIP_ID: clip_id_for(ref.uri), S.URI: ref.uri,
         S.SIZE_BYTES: -1 if ref.size_bytes is None else ref.size_bytes,
         S.STATUS: "", S.ERROR: "", S.STAGE_SECONDS: 0.0}
        for ref in inputs
    ]


def build(
    config: TimelineJobConfig,
    inputs: list[InputRef],
    out: str,
    *,
    run_id: str,
    models: ResolvedModels,
    gpus: bool,
    cpus: float,
) -> ray.data.Dataset:
    """The lazy dataset of written clip rows (``CLIP_SCHEMA``); consuming it runs the job."""
    storage_options = config.storage.storage_options()
    res = config.resources
    detector_res, emotion_res = res.detector, res.emotion
    if gpus:
        detector_res, emotion_res = (r.model_copy(update={"num_gpus": res.gpu_share})
                                     for r in (detector_res, emotion_res))
    # Start no more detector actors than fit beside a decoder and the small actors: actors
    # hold their CPUs, and a pool that cannot start deadlocks the job on a small node.
    room = cpus - res.decode.num_cpus - emotion_res.num_cpus
    fit = max(1, int(room // detector_res.num_cpus)) if detector_res.num_cpus else 1
    low, high = detector_res.actors
    detector_res = detector_res.model_copy(update={"actors": (min(low, fit), max(high, 1))})

    # One block per clip: clips are the unit of parallelism before decoding fans them out.
    ds = ray.data.from_items(input_rows(inputs), override_num_blocks=len(inputs))
    decode_args = res.decode.remote_args(stateful=False)
    ds = ds.map(make_stage_fn(storage_options, config.staging_dir), **decode_args)
    ds = ds.map(make_probe_fn(), **decode_args)
    ds = ds.flat_map(make_decode_fn(config.decode), **decode_args)
    # Instances (not classes) with the decoder's resources run as stateless tasks that Ray
    # fuses into the decode task: no actor holds a CPU idle and the chunks' frames do not
    # cross the object store again.  Voice emotion first: VoiceFeatures drops the audio.
    if models.voice_checkpoint is not None:
        ds = apply_map_batches(ds, VoiceEmotion(VoiceEmotionConfig(
            checkpoint=models.voice_checkpoint, window_s=config.window_s,
            hop_s=config.hop_s)), res.voice)
    ds = apply_map_batches(ds, VoiceFeatures(config.voice), res.voice)
    ds = apply_map_batches(ds, FaceDetector, detector_res,
                           fn_constructor_kwargs={"config": config.detector})
    ds = apply_map_batches(ds, FaceEmotion, emotion_res, fn_constructor_kwargs={
        "config": FaceEmotionConfig(checkpoint=models.face_checkpoint)})
    # One shuffle partition per clip up to a bound: Ray's default (200) is pure overhead
    # for a handful of clips.
    partitions = max(1, min(len(inputs), _MAX_SHUFFLE_PARTITIONS))
    ds = apply_map_batches(ds, to_list_columns, res.timeline)
    ds = ds.groupby(S.CLIP_ID, num_partitions=partitions).map_groups(
        make_timeline_fn(config.timeline, config.voice.min_speech_ratio,
                         models.fusion_checkpoint, product=models.fusion == "product"),
        batch_format="numpy", **res.timeline.remote_args(stateful=False))
    ds = apply_map_batches(ds, make_writer(config, out, run_id, models), res.writer,
                           batch_format="pyarrow")
    # A batch whose worker died on every retry must not abort the whole job: its clip is
    # detected as missing at the end and recorded as `failed` (see __main__.run).
    ds.context.max_errored_blocks = -1
    ds.context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
        object_store_memory=res.object_store_gib * 2**30)
    return ds


def make_writer(config: TimelineJobConfig, out: str, run_id: str, models: ResolvedModels
                ) -> TimelineWriter:
    return TimelineWriter(WriterConfig(
        out=out, storage_options=config.storage.storage_options(), run_id=run_id,
        detector=_detector_name(config), face_model=models.face_name,
        model_identity=models.identity))


def _detector_name(config: TimelineJobConfig) -> str:
    return f"{DETECTOR_NAME}(min_face={config.detector.min_face_size})"
