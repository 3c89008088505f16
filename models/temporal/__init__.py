"""Clip-level temporal head over fused window features, and valence/arousal post-processing
(see MODEL_CARD.md).

``build`` / ``load`` give a :class:`TemporalModel`; ``predict`` turns a batch of clips'
fused window features (``models.fusion.predict(...).features``, in time order) into
per-window class probabilities and valence/arousal.  ``fit_postprocess`` /
``apply_postprocess`` then refine the valence/arousal series.
"""

from models.temporal.model import (
    ARCH,
    TemporalModel,
    TemporalPrediction,
    build,
    export_torchscript,
    load,
    predict,
    save,
)
from models.temporal.network import TemporalHead, TemporalOutput, lengths_to_mask
from models.temporal.postprocess import (
    PostprocessCandidates,
    PostprocessConfig,
    apply_postprocess,
    ccc,
    fit_postprocess,
)

__all__ = [
    "ARCH",
    "PostprocessCandidates",
    "PostprocessConfig",
    "TemporalHead",
    "TemporalModel",
    "TemporalOutput",
    "TemporalPrediction",
    "apply_postprocess",
    "build",
    "ccc",
    "export_torchscript",
    "fit_postprocess",
    "lengths_to_mask",
    "load",
    "predict",
    "save",
]
