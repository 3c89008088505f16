"""Face-emotion models (see MODEL_CARD.md)."""

from models.face_emotion.model import (
    DEFAULT_MODEL,
    FaceEmotionModel,
    export_torchscript,
    load,
    predict,
    preprocess,
    save,
)

__all__ = ["DEFAULT_MODEL", "FaceEmotionModel", "export_torchscript", "load", "predict",
           "preprocess", "save"]
