"""Configuration of the training job (``emoray train``): one typed tree, from YAML and ``--set``.

Every key, its default and why is documented on the classes below; the README's "Training"
section shows a whole file.  Example configs for each task ship in ``configs/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.preflight import PreflightConfig
from infra.storage import StorageConfig
from infra.tracking import TrackingConfig
from operators.io.files import is_remote
from pipelines.emotion_timeline.config import load_config

Task = Literal["face", "voice", "fusion", "temporal"]
DataFormat = Literal["fer2013", "ferplus", "ravdess", "cremad", "folders", "manifest", "parquet"]
Loss = Literal["auto", "cross_entropy", "multilabel_bce", "soft_cross_entropy"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class DataSource(_Frozen):
    """One set of samples: a corpus in its published layout (read by the adapters of
    ``pipelines.train.corpora``) or a folder of prepared Parquet shards (``emoray prepare``).

    ``uri`` is local or ``s3://…``.  Which rows are used:

    * ``split``: keep the rows of this split (``train``/``val``/``test``) after the split
      rules below; None keeps every row.
    * Corpora with their own split keep it (FER2013's Usage, AffectNet-style ``train/``
      ``val/`` folders, a manifest's ``split`` column).  RAVDESS uses its fixed actor split
      (val 17–20, test 21–24).  Others (CREMA-D, manifests without ``split``) are split by
      subject with ``val_subjects``/``test_subjects`` (ids or a fraction) and ``split_seed``
      — never by clip or frame.
    """

    format: DataFormat
    uri: str
    split: Literal["train", "val", "test"] | None = None
    # FER+ only: the FER2013 CSV whose images the FER+ votes label, and the label scheme:
    # majority (weighted CE), multilabel (BCE), probability (a label drawn per epoch from the
    # votes) or crossentropy (soft CE against the vote distribution).
    fer2013_uri: str | None = None
    ferplus_scheme: Literal["majority", "multilabel", "probability", "crossentropy"] = "majority"
    # Folder trees and FER+: AffectNet's contempt class is dropped or merged into disgust.
    contempt: Literal["drop", "disgust"] = "drop"
    val_subjects: float | list[str] = 0.2
    test_subjects: float | list[str] = 0.0
    split_seed: int = 0
    # Speech/video corpora: analysis windows cut from each file (the timeline's window), and
    # at most this many windows per file (long manifest entries would otherwise dominate).
    window_s: float = Field(1.0, gt=0)
    hop_s: float = Field(0.5, gt=0)
    max_windows_per_file: int = Field(8, ge=1)
    # Voice only.  ``windows``: the max_windows_per_file loudest windows of each file, fixed
    # rows.  ``speech``: one row per file holding its speech, trimmed to the frames within
    # trim_db of the loudest (``utterances.speech_bounds``); training draws fresh random
    # windows from it every epoch (``train.crops_per_sample``) and evaluation scores the
    # utterance (the mean of its window probabilities), as the model card reports.
    samples: Literal["windows", "speech"] = "windows"
    trim_db: float = Field(35.0, gt=0)
    # Valence/arousal targets: the corpus's own (NaN where it has none), or ``circumplex``:
    # the labelled class's point of the timeline's circumplex (operators.fusion.
    # build_timeline.CIRCUMPLEX) where the corpus has none (RAVDESS): the heads then learn
    # where each category sits, which also regularises the shared embedding.
    va_targets: Literal["corpus", "circumplex"] = "corpus"

    @field_validator("uri", "fer2013_uri")
    @classmethod
    def _absolute(cls, uri: str | None) -> str | None:
        """Relative local paths are taken from the directory the command runs in, here on
        the driver: Ray Train's workers run elsewhere (their own working directory)."""
        if uri is None or is_remote(uri):
            return uri
        return str(Path(uri).expanduser().absolute())

    @model_validator(mode="after")
    def _ferplus_needs_images(self) -> DataSource:
        if self.format == "ferplus" and not self.fer2013_uri:
            raise ValueError("data format ferplus needs fer2013_uri (the FER2013 CSV with the "
                             "images the FER+ votes label)")
        return self


class DataConfig(_Frozen):
    """Training and validation samples (validation picks the best epoch and the promoted
    model, so keep it subject-disjoint from training).  Without ``val`` (a final model trained
    on every subject, its recipe chosen by ``folds``) the last epoch is kept and nothing is
    evaluated or promoted."""

    train: DataSource
    val: DataSource | None = None


class ModelConfig(_Frozen):
    """The network.  ``arch``: face — ``mini-xception`` (the shipped FER2013 network's),
    ``resnet18``, ``resnet50``, ``vgg13``; voice — ``voice-emotion-cnn``; fusion —
    ``attention-bilinear`` or ``decision``; temporal — ``temporal-lstm``.  ``hparams`` go to
    the model's ``build`` (see each ``models/*/MODEL_CARD.md``; e.g. face ``input_size``,
    ``base_width``).  ``init``: weights to fine-tune from — a checkpoint file, ``default``
    (face: the shipped FER2013 network) or an MLflow URI (``models:/NAME@ALIAS``,
    ``runs:/ID/PATH``); None trains from a random init."""

    arch: str | None = None  # None: the task's default architecture
    hparams: dict[str, Any] = Field(default_factory=dict)
    init: str | None = None


class AugmentConfig(_Frozen):
    """Training-time augmentation (``pipelines.train.augment.augment_face``/``augment_voice``),
    drawn from the epoch's seeded generator; ``enabled: false`` turns all of it off."""

    enabled: bool = True
    # faces
    p_flip: float = Field(0.5, ge=0, le=1)
    max_degrees: float = Field(10.0, ge=0)
    crop_scale: tuple[float, float] = (0.8, 1.0)
    max_brightness: float = Field(0.2, ge=0)
    noise_std: float = Field(0.02, ge=0)
    # voices
    min_gain_db: float = -6.0
    max_gain_db: float = 6.0
    snr_db: tuple[float, float] = (10.0, 30.0)
    max_mask_fraction: float = Field(0.1, ge=0, lt=1)
    # SpecAugment on the voice network's log-mel input (``augment.spec_augment``): this many
    # time spans and mel bands per window, each up to spec_max_fraction of its axis, set to
    # the (standardised) spectrogram's mean.  0 and 0 turn it off.
    spec_time_masks: int = Field(2, ge=0)
    spec_freq_masks: int = Field(2, ge=0)
    spec_max_fraction: float = Field(0.15, ge=0, lt=1)


class OversampleConfig(_Frozen):
    """Re-sampling of rare classes' training rows (``balance.oversample_rare``)."""

    enabled: bool = False
    target_ratio: float = Field(0.5, gt=0, le=1)
    max_factor: float = Field(5.0, ge=1)


class ScheduleConfig(_Frozen):
    """Learning-rate schedule per epoch: ``none``; ``cosine`` (to ``min_lr`` over the
    epochs); ``step`` (× ``gamma`` every ``step_epochs``).  ``warmup_epochs`` ramp linearly
    from ``lr / (warmup_epochs + 1)`` first."""

    name: Literal["none", "cosine", "step"] = "cosine"
    min_lr: float = Field(0.0, ge=0)
    step_epochs: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0)


class EarlyStoppingConfig(_Frozen):
    """Stop when ``metric`` (a validation metric of the epoch report, e.g. ``val_macro_f1``,
    ``val_accuracy``, ``val_loss``, ``val_ccc_valence``) has not improved for ``patience``
    epochs; the best epoch's weights are the ones registered.  ``patience: null`` never stops
    early (the best epoch is still the one kept)."""

    metric: str = "val_macro_f1"
    mode: Literal["max", "min"] = "max"
    patience: int | None = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(_Frozen):
    """The optimisation.  ``loss: auto`` picks from the labels: FER+ multilabel → sigmoid
    BCE, label distributions (FER+ crossentropy, manifests' ``label_dist``) → soft CE, else
    cross-entropy (weighted when ``class_weights``).  Valence/arousal targets, where the data
    has them and the model predicts them, add ``ccc_weight`` × the CCC loss."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)  # per worker
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    loss: Loss = "auto"
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # cross-entropy losses only
    class_weights: bool = True  # reciprocal-frequency class weights in the cross-entropy
    ccc_weight: float = Field(1.0, ge=0)
    # The valence/arousal loss that ccc_weight weighs: 1 - CCC (rated corpora), or the mean
    # squared error (category-derived targets, ``va_targets: circumplex``: CCC of a batch
    # whose targets take 7 values rewards matching their spread more than the points).
    va_loss: Literal["ccc", "mse"] = "ccc"
    # Voice ``samples: speech`` rows: random windows drawn per row and epoch (each step
    # trains on batch_size x crops_per_sample windows).  Rows of one window give that window.
    crops_per_sample: int = Field(1, ge=1)
    oversample: OversampleConfig = OversampleConfig()
    augment: AugmentConfig = AugmentConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    seed: int = 0  # weights, shuffling, augmentation and label draws all derive from it
    # DataLoader worker processes per training worker (0: load in the training process,
    # right for the small in-memory tables here).
    loader_workers: int = Field(0, ge=0)


class ScalingConfig(_Frozen):
    """Ray Train workers.  ``use_gpu: auto`` uses one GPU per worker when the cluster has
    GPUs (NCCL backend), else CPUs (gloo).  ``cpus_per_worker`` is Ray's scheduling share,
    also the worker's torch thread count (at least 1)."""

    num_workers: int = Field(2, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"
    cpus_per_worker: float = Field(1.0, gt=0)
    # Worker-group restarts after a worker dies (node lost, OOM kill, a crash); each restart
    # resumes from the latest epoch checkpoint.  -1: without limit.
    max_failures: int = Field(2, ge=-1)


class RegisterConfig(_Frozen):
    """The MLflow registered model the trained weights become a new version of (None: only
    logged to the run, not registered)."""

    name: str | None = None


class TrainJobConfig(_Frozen):
    """Everything ``emoray train`` needs.

    Checkpoints go to ``storage_path/run_name`` (local or ``s3://``), one per epoch.  Running
    the same config again with the same ``storage_path`` and ``run_name`` **continues** that
    run from its last epoch checkpoint (after a crash, a kill or a stopped job), logging into
    the same MLflow run; a finished run is not trained again, only re-evaluated and logged.
    Use a new ``run_name`` to train from scratch.
    """

    task: Task
    run_name: str = "train"
    storage_path: str = "checkpoints"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingConfig = ScalingConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="emoray-train")
    # Spelt `register` in YAML/--set; the attribute is `registry` (pydantic models inherit
    # ABC's `register`).
    registry: RegisterConfig = Field(RegisterConfig(), alias="register")
    storage: StorageConfig = StorageConfig()
    preflight: PreflightConfig = PreflightConfig()
    address: str | None = None  # Ray cluster; None starts a local Ray
    num_cpus: int | None = None  # local Ray only; None = all cores
    # Speaker-disjoint cross-validation instead of one run (``emoray train --folds K``): all
    # rows of data.train (its split ignored), subjects sorted and cut into K contiguous groups;
    # each group is validated once by a model trained on the others for train.epochs, and
    # scored by its last epoch (the fold's speakers choose nothing).  RAVDESS actors 01-20 in
    # 5 folds: 01-04, 05-08, ... each 2 male (odd) and 2 female (even) actors.
    folds: int | None = Field(None, ge=2)


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None
                      ) -> TrainJobConfig:
    """Read a YAML config and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    return load_config(path, overrides, model=TrainJobConfig)  # type: ignore[type-var]


def config_json(config: TrainJobConfig) -> dict[str, Any]:
    """``config`` as JSON data with its YAML key names (reloadable by ``model_validate``)."""
    return config.model_dump(mode="json", by_alias=True)
