"""Face emotion: per-face class probabilities from aligned crops."""

from __future__ import annotations

import logging

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models import face_emotion
from operators import schema as S
from operators.batches import ragged
from operators.resources import StageResources
from operators.step import Step, load_from_bytes
from operators.vision.detect_faces import resolve_device

logger = logging.getLogger(__name__)


class FaceEmotionConfig(BaseModel):
    """Which face-emotion model runs, and how.

    ``checkpoint`` holds the bytes of a model file (our ``.pt`` checkpoint or TorchScript),
    read on the driver (which also resolves MLflow URIs), so actors on any node get the same
    model without shared storage; None selects the network shipped in ``models.face_emotion``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: bytes | None = None
    # Crops per forward pass: the default CNN is tiny, so large batches amortise overhead.
    max_batch: int = Field(512, ge=1)
    device: str = "auto"


class FaceEmotion(Step):
    """Classify every detected face (an actor: it holds the model).

    Columns read: ``FACE_CROPS`` (uint8 faces×S×S×3 per chunk row).  Columns written:
    ``FACE_PROBS`` (float32 faces×7, order ``S.EMOTIONS``) and ``FACE_FEATURES`` (float32
    faces×D, the model's penultimate features, for fusion); ``FACE_CROPS`` is dropped, so no
    face image leaves this stage (crops are biometric data).  Rows without faces get empty
    (0×7, 0×D) arrays.  The model loads once per actor (``setup``), on a GPU share when
    given one.
    """

    name = "FaceEmotion"
    actor = True
    gpu = True
    reads = (S.FACE_CROPS,)
    writes = (S.FACE_PROBS, S.FACE_FEATURES)
    drops = (S.FACE_CROPS,)

    def __init__(self, config: FaceEmotionConfig, resources: StageResources | None = None):
        super().__init__(resources)
        self.config = config

    def setup(self) -> None:
        self.model = load_from_bytes(face_emotion.load, self.config.checkpoint,
                                     device=resolve_device(self.config.device))
        logger.info("FaceEmotion model %s on %s", self.model.name, self.model.device)

    def process(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        crops = [np.asarray(c) for c in batch[S.FACE_CROPS]]
        counts = [len(c) for c in crops]
        stacked = (np.concatenate([c for c in crops if len(c)]) if sum(counts)
                   else np.zeros((0, 1, 1, 3), np.uint8))
        parts = [face_emotion.predict(self.model, stacked[i:i + self.config.max_batch])
                 for i in range(0, max(1, len(stacked)), self.config.max_batch)]
        probs = np.concatenate([p for p, _ in parts])
        features = np.concatenate([f for _, f in parts])
        offsets = np.cumsum([0, *counts])
        rows = range(len(counts))
        batch[S.FACE_PROBS] = ragged([probs[offsets[i]:offsets[i + 1]] for i in rows])
        batch[S.FACE_FEATURES] = ragged([features[offsets[i]:offsets[i + 1]] for i in rows])
        del batch[S.FACE_CROPS]
        return batch
