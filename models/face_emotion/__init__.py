"""Face-emotion models (see MODEL_CARD.md)."""

from models.face_emotion.model import (
    ARCHITECTURES,
    DEFAULT_MODEL,
    FaceEmotionModel,
    InputSpec,
    build,
    export_torchscript,
    load,
    predict,
    preprocess,
    resolve_hparams,
    save,
)

__all__ = ["ARCHITECTURES", "DEFAULT_MODEL", "FaceEmotionModel", "InputSpec", "build",
           "export_torchscript", "load", "predict", "preprocess", "resolve_hparams", "save"]
