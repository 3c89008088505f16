"""Face emotion: per-face class probabilities from aligned crops."""

from __future__ import annotations

import logging
import tempfile
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models import face_emotion
from operators import schema as S
from operators.batches import ragged
from operators.memory import release_freed_heap
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


class FaceEmotion:
    """Ray Data ``map_batches`` actor classifying every detected face.

    Columns read: ``FACE_CROPS`` (uint8 faces×S×S×3 per chunk row).  Columns written:
    ``FACE_PROBS`` (float32 faces×7, order ``S.EMOTIONS``) and ``FACE_FEATURES`` (float32
    faces×D, the model's penultimate features, for fusion); ``FACE_CROPS`` is dropped, so no
    face image leaves this stage (crops are biometric data).  Rows without faces get empty
    (0×7, 0×D) arrays.  Resources: the model loads once per actor (GPU when given one); freed
    heap goes back to the OS after every batch (``operators.memory``).
    """

    def __init__(self, config: FaceEmotionConfig):
        self.config = config
        device = resolve_device(config.device)
        if config.checkpoint is None:
            self.model = face_emotion.load(None, device=device)
        else:
            with tempfile.NamedTemporaryFile(suffix=".pt") as handle:
                handle.write(config.checkpoint)
                handle.flush()
                self.model = face_emotion.load(handle.name, device=device)
        logger.info("FaceEmotion model %s on %s", self.model.name, self.model.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
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
        # Share this batch's compute time between its rows in proportion to their faces.
        elapsed = time.perf_counter() - started
        total = max(1, sum(counts))
        batch[S.STAGE_SECONDS] = batch[S.STAGE_SECONDS] + elapsed * np.asarray(counts) / total
        release_freed_heap()  # a job-long actor: keep its heap flat
        return batch
