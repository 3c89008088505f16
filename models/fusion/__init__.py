"""Window-level face–voice emotion fusion (see MODEL_CARD.md).

``build`` / ``load`` give a :class:`FusionModel`; ``predict`` turns a batch of windows' face
frame features and voice features into class probabilities, valence/arousal, fused features
for the temporal head and the fusion mode of each window.
"""

from models.fusion.model import (
    ARCHS,
    FusionModel,
    FusionPrediction,
    build,
    export_torchscript,
    load,
    predict,
    save,
)
from models.fusion.network import (
    FUSION_MODES,
    AttentionBilinearFusion,
    DecisionFusion,
    FusionOutput,
)

__all__ = [
    "ARCHS",
    "FUSION_MODES",
    "AttentionBilinearFusion",
    "DecisionFusion",
    "FusionModel",
    "FusionOutput",
    "FusionPrediction",
    "build",
    "export_torchscript",
    "load",
    "predict",
    "save",
]
