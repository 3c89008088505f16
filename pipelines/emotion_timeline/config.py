"""Configuration of the emotion-timeline job: one typed tree, from YAML and ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from infra.preflight import PreflightConfig
from infra.storage import StorageConfig
from infra.tracking import TrackingConfig
from operators.audio.voice_features import VoiceFeaturesConfig
from operators.findings.config import FindingsConfig
from operators.fusion.build_timeline import TimelineConfig
from operators.fusion.participant import ParticipantConfig
from operators.io.decode_frames import DecodeConfig
from operators.resources import StageResources
from operators.vision.detect_faces import FaceDetectorConfig


class ResourcesConfig(BaseModel):
    """Resources per stage (see ``operators.resources``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # CPU figures are Ray's scheduling shares, not thread counts.  They are sized so that the
    # long-lived actors (detector 1 + emotion 0.25) leave room for decoding even on a
    # 2-CPU machine; larger numbers deadlock small nodes (actors hold their CPUs).
    # Staging, probing and decoding fuse into one task per clip (decord or PyAV + one ffmpeg).
    decode: StageResources = StageResources(num_cpus=0.5)
    # Voice emotion (the voice CNN, ~10 ms per chunk) and voice features (cheap numpy/torch
    # on 16 kHz audio): the decoder's CPU share and no batch size (whatever the decoder's
    # blocks hold), so Ray fuses them into the decode task: a separate stage would copy
    # every chunk's frames through the object store once more (measured: a 10-minute
    # recording's peak 6.5 -> 5.4 GiB together with the smaller budgets below; the voice
    # CNN as an actor of its own queued 2.7 GiB of frames in front of it on a busy node).
    voice: StageResources = StageResources(num_cpus=0.5)
    # MTCNN dominates the cost: one chunk (50 frames) per call.  Ray gives an actor one
    # torch thread per whole CPU it reserves (at least one), so half-CPU actors run one
    # thread each and two of them keep a 2-core node busy next to the decoder (measured
    # 4.2x → 5.2x real time there); the pool grows to 8 on larger nodes.  On GPU nodes each
    # actor also takes `gpu_share` of a GPU.
    detector: StageResources = StageResources(num_cpus=0.5, batch_size=1, actors=(2, 8))
    # The emotion CNN is tiny: a light actor batching several chunks' faces.
    emotion: StageResources = StageResources(num_cpus=0.25, batch_size=4, actors=(1, 1))
    # Timeline building and writing are per clip, on small rows.
    timeline: StageResources = StageResources(num_cpus=0.25)
    # Partitions of the groupby(clip_id) shuffle before the timeline step; null: one per
    # clip, at most 64 (Ray's default, 200, is pure overhead for a handful of clips).  Rows
    # of every branch share one schema, so any number is safe: tests force 1 and 2 to put
    # bad and good clips in one partition.
    shuffle_partitions: int | None = Field(None, ge=1)
    writer: StageResources = StageResources(num_cpus=0.25, batch_size=8)
    # Share of one GPU per detector/emotion actor when the cluster has GPUs: MTCNN at
    # 640 px uses a fraction of a modern GPU, so four actors share one.
    gpu_share: float = Field(0.25, gt=0, le=1)
    # Object store the job may fill with in-flight rows.  Decoding outruns detection, so
    # without a cap it would buffer frames up to the store's size (30% of RAM); 1 GiB is
    # ~20 chunks of 640×480 frames in flight, enough to keep 8 detector actors busy (0.5 GiB
    # left the second of two idle).  The store's pages stay resident once touched, so this
    # cap (and the store size below) is most of what a long recording adds to the peak.
    object_store_gib: float = Field(1.0, gt=0)
    # Size of the object store of a local Ray started by the job (a cluster's is set where
    # the cluster starts): twice the job's share, so Ray's own buffers have room too.
    local_object_store_gib: float = Field(2.0, gt=0)


class TimelineJobConfig(BaseModel):
    """Everything the ``emoray run`` job needs besides INPUT and OUT."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The analysis grid, shared by decoding, voice features and the timeline.
    window_s: float = Field(1.0, gt=0)
    hop_s: float = Field(0.5, gt=0)
    # Face-emotion model: None = the shipped FER2013 network; else a local .pt / TorchScript
    # file or an MLflow URI (models:/NAME@ALIAS, runs:/ID/PATH).
    face_model: str | None = None
    # How face and voice combine per window:
    #   product   (default) the face model's probabilities times the voice model's where
    #             there is speech, renormalised: no weights.  It won on the paired validation
    #             split (acc 0.782 vs face only 0.618, voice only 0.574, trained attention-bilinear
    #             0.732; models/fusion/MODEL_CARD.md); that corpus pairs unrelated faces and voices
    #             by label, it is not audio-visual data.
    #   learnt    a trained fusion model (fusion_model, required) on both models' features.
    #   face_only no voice model: categories from the face alone (voice features still
    #             computed).
    # Giving fusion_model alone selects learnt; contradictions are refused.
    fusion: Literal["product", "learnt", "face_only"] = "product"
    # Voice-emotion model (product and learnt): None = the shipped RAVDESS network
    # (models/voice_emotion/weights); else the same forms as face_model.
    voice_model: str | None = None
    # Trained fusion model (learnt only): a .pt file or MLflow URI; none ships.
    fusion_model: str | None = None
    address: str | None = None  # Ray cluster; None starts a local Ray
    num_cpus: int | None = None  # local Ray only; None = all cores
    # Folder where remote inputs are staged for the decoders (deleted per clip).  None: each
    # node's own, resolved on the node ($EMORAY_STAGING_DIR, else its temp folder's
    # emoray-staging; operators/io/stage_input.py), so nodes of a cluster never share one.
    staging_dir: str | None = None
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    preflight: PreflightConfig = PreflightConfig()
    decode: DecodeConfig = DecodeConfig()
    detector: FaceDetectorConfig = FaceDetectorConfig()
    voice: VoiceFeaturesConfig = VoiceFeaturesConfig()
    timeline: TimelineConfig = TimelineConfig()
    # Baselines, moment rules and task-marker checks (README: Findings).
    findings: FindingsConfig = FindingsConfig()
    # Task markers (uri,task,start_s,end_s) for the run's recordings, besides the sidecar
    # <recording name>.tasks.csv files found next to them; `--tasks` sets it.
    tasks: str | None = None
    # Where the participant is, when a study knows its layout (README: Who is the
    # participant); by default the participant is chosen from evidence.
    participant: ParticipantConfig = ParticipantConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @model_validator(mode="before")
    @classmethod
    def _learnt_when_a_fusion_model_is_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("fusion_model") is not None and (
                data.get("fusion") is None):
            data = {**data, "fusion": "learnt"}
        return data

    @model_validator(mode="after")
    def _models_fit_the_fusion(self) -> TimelineJobConfig:
        if self.fusion == "learnt" and self.fusion_model is None:
            raise ValueError("fusion=learnt needs fusion_model (a trained fusion checkpoint); "
                             "fusion=product needs none")
        if self.fusion != "learnt" and self.fusion_model is not None:
            raise ValueError(f"fusion_model is given but fusion={self.fusion}: set "
                             "fusion=learnt to use it, or drop fusion_model")
        if self.fusion == "face_only" and self.voice_model is not None:
            raise ValueError("voice_model is given but fusion=face_only runs no voice model: "
                             "drop one of them")
        return self

    @model_validator(mode="before")
    @classmethod
    def _share_grid(cls, data: Any) -> Any:
        """Copy the top-level window/hop into the stages; refuse a stage-level override."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        grid = {k: data.get(k, cls.model_fields[k].default) for k in ("window_s", "hop_s")}
        for stage in ("decode", "voice", "timeline"):
            section = dict(data.get(stage) or {})
            clash = [k for k in grid if k in section and section[k] != grid[k]]
            if clash:
                raise ValueError(
                    f"set {', '.join(clash)} at the top level, not in '{stage}': "
                    "decoding, voice and timeline must share one analysis grid"
                )
            data[stage] = {**section, **grid}
        return data


C = TypeVar("C", bound=TimelineJobConfig)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None,
    model: type[C] = TimelineJobConfig,  # type: ignore[assignment]
) -> C:
    """Read a YAML config (optional) and apply ``key.sub=value`` overrides (YAML values);
    ``model`` is the config class (a job extending this one passes its own)."""
    data: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config {path} must be a YAML mapping, got {type(loaded).__name__}")
        data = loaded or {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return model.model_validate(data)


def cli_overrides(args: Any, flags: dict[str, str]) -> list[str]:
    """A job command's ``--set`` overrides followed by its shortcut flags that were given:
    ``flags`` maps an argparse attribute (``tracking_uri``) to its config key
    (``tracking.uri``); the shortcuts come last, so they win over a ``--set`` of the same
    key."""
    overrides = list(args.overrides)
    for attribute, key in flags.items():
        value = getattr(args, attribute, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides
