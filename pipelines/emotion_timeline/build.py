"""The emotion-timeline job's data flow, on one screen.

    inputs ─ stage ─ probe ─ decode ─ [voice emotion] ─ voice features ─ detect faces ─┐
    (1 row/clip)  (fused: 1 task per clip)  (chunk rows)    face emotion ─────────────┘
          groupby clip ─ timeline (product rule | learnt fusion | face only) ─ findings
                                                                          ─ write ─ clip rows
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray.data

from infra.storage import InputRef
from models.face_emotion.model import DEFAULT_WEIGHTS
from operators import schema as S
from operators.audio.voice_emotion import VoiceEmotion, VoiceEmotionConfig
from operators.audio.voice_features import VoiceFeatures
from operators.batches import ToListColumns
from operators.findings.context import ClipContext
from operators.findings.find_moments import Findings
from operators.fusion.build_timeline import BuildTimeline
from operators.io.decode_frames import DecodeFrames
from operators.io.probe_media import ProbeMedia
from operators.io.stage_input import StageInput
from operators.io.write_outputs import TimelineWriter, WriterConfig
from operators.step import Step, apply_steps
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
    """The job's first rows (``schema.INPUT_SCHEMA``): one per input."""
    return [
        {S.CLIP_ID: S.clip_id_for(ref.uri), S.URI: ref.uri,
         S.SIZE_BYTES: -1 if ref.size_bytes is None else ref.size_bytes,
         S.STATUS: "", S.ERROR: "", S.STAGE_SECONDS: 0.0}
        for ref in inputs
    ]


def build(
    config: TimelineJobConfig,
    inputs: list[InputRef],
    *,
    models: ResolvedModels,
    writer: TimelineWriter,
    gpus: bool,
    cpus: float,
    after: Sequence[Step] = (),
    contexts: dict[str, ClipContext] | None = None,
) -> ray.data.Dataset:
    """The lazy dataset of clip rows written by ``writer`` (``CLIP_SCHEMA``; the job runner
    makes it with :func:`make_writer` and writes the failed clips' rows with it too);
    consuming the dataset runs the job.  ``after``: steps on the written clip rows (the
    nightly job's state record), in the same plan.  ``contexts``: each clip's session
    metadata and task markers (``pipelines.emotion_timeline.sessions``) for the findings."""
    res = config.resources
    # Start no more detector actors than fit beside a decoder and the small actors: actors
    # hold their CPUs, and a pool that cannot start deadlocks the job on a small node.
    room = cpus - res.decode.num_cpus - res.emotion.num_cpus
    fit = max(1, int(room // res.detector.num_cpus)) if res.detector.num_cpus else 1
    low, high = res.detector.actors
    detector_res = res.detector.model_copy(update={"actors": (min(low, fit), max(high, 1))})

    # Stage, probe and decode share the decoder's resources, and the voice steps (tasks with
    # the same resources) follow it: Ray fuses them into one task per clip, so a chunk's
    # frames do not cross the object store again.  Voice emotion first: VoiceFeatures drops
    # the audio.
    steps: list[Step] = [
        StageInput(config.storage.storage_options(), config.staging_dir, res.decode),
        ProbeMedia(res.decode),
        DecodeFrames(config.decode, res.decode),
    ]
    if models.voice_checkpoint is not None:
        steps.append(VoiceEmotion(VoiceEmotionConfig(
            checkpoint=models.voice_checkpoint, window_s=config.window_s,
            hop_s=config.hop_s), res.voice))
    steps += [
        VoiceFeatures(config.voice, res.voice),
        FaceDetector(config.detector, detector_res),
        FaceEmotion(FaceEmotionConfig(checkpoint=models.face_checkpoint), res.emotion),
        ToListColumns(res.timeline),
        BuildTimeline(config.timeline, config.voice.min_speech_ratio,
                      models.fusion_checkpoint, product=models.fusion == "product",
                      resources=res.timeline, participant=config.participant),
        Findings(config.findings, contexts, res.timeline),
        writer,
        *after,
    ]
    ds = ray.data.from_items(input_rows(inputs), override_num_blocks=len(inputs))
    # One block per clip (above): clips are the unit of parallelism before decoding fans
    # them out.  One shuffle partition per clip up to a bound, unless configured.
    partitions = res.shuffle_partitions or max(1, min(len(inputs), _MAX_SHUFFLE_PARTITIONS))
    ds = apply_steps(ds, steps, S.INPUT_SCHEMA, gpu_share=res.gpu_share if gpus else 0.0,
                     shuffle_partitions=partitions)
    # A batch whose worker died on every retry must not abort the whole job: its clip is
    # detected as missing at the end and recorded as `failed` by the job runner.
    ds.context.max_errored_blocks = -1
    ds.context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
        object_store_memory=res.object_store_gib * 2**30)
    return ds


def make_writer(config: TimelineJobConfig, out: str, run_id: str, models: ResolvedModels
                ) -> TimelineWriter:
    return TimelineWriter(WriterConfig(
        out=out, storage_options=config.storage.storage_options(), run_id=run_id,
        detector=_detector_name(config), face_model=models.face_name,
        model_identity=models.identity), config.resources.writer)


def _detector_name(config: TimelineJobConfig) -> str:
    return f"{DETECTOR_NAME}(min_face={config.detector.min_face_size})"
