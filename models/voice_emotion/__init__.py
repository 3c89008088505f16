"""Speech emotion model: log-mel CNN with attention pooling → EMOTIONS, valence, arousal.

See ``MODEL_CARD.md`` for what it was trained on and where it fails.
"""

from models.voice_emotion.features import PROSODY_FEATURES, log_mel, prosody_vector
from models.voice_emotion.model import (
    ARCH,
    DEFAULT_MODEL,
    DEFAULT_WEIGHTS,
    RAVDESS_EMOTIONS,
    VoiceEmotionModel,
    VoicePrediction,
    build,
    export_torchscript,
    load,
    predict,
    save,
    speaker_statistics,
)
from models.voice_emotion.network import VoiceEmotionConfig, VoiceEmotionNet, VoiceEmotionOutput

__all__ = [
    "ARCH",
    "DEFAULT_MODEL",
    "DEFAULT_WEIGHTS",
    "PROSODY_FEATURES",
    "RAVDESS_EMOTIONS",
    "VoiceEmotionConfig",
    "VoiceEmotionModel",
    "VoiceEmotionNet",
    "VoiceEmotionOutput",
    "VoicePrediction",
    "build",
    "export_torchscript",
    "load",
    "log_mel",
    "predict",
    "prosody_vector",
    "save",
    "speaker_statistics",
]
