"""Load, build, run, save and export the voice emotion model (plain PyTorch).

* :func:`load` reads a trained model from our checkpoint format (``models/checkpoint.py``,
  arch :data:`ARCH`) or from a TorchScript file written by :func:`export_torchscript`;
  ``load(None)`` reads the shipped weights (:data:`DEFAULT_WEIGHTS`, trained on RAVDESS: see
  ``MODEL_CARD.md``).  Nothing is downloaded at run time.
* :func:`build` makes a freshly initialised model (what training starts from).
* :func:`predict` runs a batch of analysis windows; :func:`save` and
  :func:`export_torchscript` write the two file kinds :func:`load` reads.

Classes are :data:`operators.schema.EMOTIONS` (FER2013's 7, the timeline's categories).
Speech corpora label other sets; :data:`RAVDESS_EMOTIONS` maps RAVDESS's 8 onto them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.checkpoint import (
    Checkpoint,
    load_weights,
    read_model_file,
    save_checkpoint,
    write_torchscript,
)
from models.voice_emotion.features import _as_batch
from models.voice_emotion.network import VoiceEmotionConfig, VoiceEmotionNet
from operators.schema import EMOTIONS

logger = logging.getLogger(__name__)

ARCH = "voice-emotion-cnn"
"""Architecture name in checkpoints and TorchScript metadata."""

DEFAULT_MODEL = "ravdess-voice-cnn"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "ravdess_voice_cnn.pt"
"""The shipped weights (RAVDESS actors 1–16, CC BY-NC-SA 4.0; see MODEL_CARD.md)."""


RAVDESS_EMOTIONS: dict[str, str] = {
    "01": "neutral",
    "02": "neutral",  # calm: RAVDESS's low-arousal neutral; EMOTIONS has no calm
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
"""RAVDESS emotion code (3rd field of its file names) → :data:`EMOTIONS` class.

Calm is merged into neutral: both are unemotional deliveries of the same statements (calm is
the lower-arousal one), and the timeline's categories follow FER2013, which has no calm.
"""


@dataclass
class VoicePrediction:
    """Model outputs for B windows, float32 numpy arrays (rows in input order)."""

    probs: np.ndarray  # (B, len(EMOTIONS)): softmax over EMOTIONS, rows sum to 1
    valence: np.ndarray  # (B,) in [-1, 1]
    arousal: np.ndarray  # (B,) in [-1, 1]
    features: np.ndarray  # (B, embed_dim): pooled embedding, for multimodal fusion
    attention: np.ndarray  # (B, regions): weights over the time-frequency regions, sum 1


@dataclass
class VoiceEmotionModel:
    """A voice emotion network ready for :func:`predict`.

    ``module`` is in eval mode on ``device`` (a :class:`VoiceEmotionNet`, or its TorchScript
    form when loaded from one); ``hparams`` are :class:`VoiceEmotionConfig`'s fields; ``name``
    labels the weights in outputs and logs.
    """

    module: nn.Module
    name: str
    hparams: dict[str, Any]
    classes: tuple[str, ...]
    device: torch.device

    @property
    def config(self) -> VoiceEmotionConfig:
        return VoiceEmotionConfig.from_hparams(self.hparams)


def _ready(
    module: nn.Module, name: str, config: VoiceEmotionConfig, device: str | torch.device
) -> VoiceEmotionModel:
    device = torch.device(device)
    module = module.to(device).eval()
    return VoiceEmotionModel(module, name, config.to_hparams(), EMOTIONS, device)


def build(
    hparams: Mapping[str, Any] | None = None, seed: int = 0, device: str | torch.device = "cpu"
) -> VoiceEmotionModel:
    """A freshly initialised model (eval mode; call ``model.module.train()`` to train it).

    ``hparams`` are :class:`VoiceEmotionConfig` fields (defaults for those left out; unknown
    ones raise ValueError).  The initial weights depend on ``seed`` only: the same seed gives
    the same weights, and the global torch RNG is left as it was.
    """
    config = VoiceEmotionConfig.from_hparams(hparams)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = VoiceEmotionNet(config)
    return _ready(net, f"{ARCH}-untrained-seed{seed}", config, device)


def load(
    source: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
) -> VoiceEmotionModel:
    """Load trained weights: our checkpoint (arch :data:`ARCH`) or an exported TorchScript file.

    ``source`` None or :data:`DEFAULT_MODEL` → the shipped weights (:data:`DEFAULT_WEIGHTS`).
    The kind of file is recognised from its content.  ``name`` is the checkpoint metadata's
    ``name`` when present, else the file's stem.  Raises ``ValueError`` for a file of another
    kind or architecture, other classes than :data:`EMOTIONS`, or weights that do not fit the
    hparams; ``FileNotFoundError`` for a missing file.
    """
    if source is None or source == DEFAULT_MODEL:
        source = DEFAULT_WEIGHTS
    found = read_model_file(source, device, "voice emotion", [ARCH], EMOTIONS)
    config = VoiceEmotionConfig.from_hparams(found.hparams)
    module = found.scripted
    if module is None:
        module = VoiceEmotionNet(config)
        load_weights(module, found.state_dict, source, found.hparams)
    name = str(found.metadata.get("name") or Path(source).stem)
    logger.info("loaded voice emotion model %s from %s", name, source)
    return _ready(module, name, config, device)


def speaker_statistics(model: VoiceEmotionModel, waveforms: np.ndarray | torch.Tensor
                       ) -> np.ndarray:
    """``(2, n_mels)`` float32: the speaker statistics of one speaker's windows ``(B, samples)``
    (per-band mean and std of the log-mel over its speech windows; ``features`` module
    docstring), for :func:`predict`'s ``speaker`` on models with ``speaker_norm``.  Raises
    ValueError as :func:`predict` does on bad windows."""
    batch = _checked(model, waveforms)
    with torch.inference_mode():
        return model.module.speaker_stats(batch.to(model.device)).float().cpu().numpy()


def _checked(model: VoiceEmotionModel, waveforms: np.ndarray | torch.Tensor) -> torch.Tensor:
    batch = _as_batch(waveforms)
    min_samples = model.config.min_samples
    if batch.shape[1] < min_samples:
        raise ValueError(
            f"windows of {batch.shape[1]} samples are shorter than the model's "
            f"minimum of {min_samples}"
        )
    return batch


def predict(model: VoiceEmotionModel, waveforms: np.ndarray | torch.Tensor,
            speaker: np.ndarray | torch.Tensor | None = None) -> VoicePrediction:
    """Emotion probabilities, valence, arousal, features and attention for each window.

    ``waveforms`` is ``(B, samples)`` mono audio at ``model.hparams["sample_rate"]`` (16 kHz),
    cast to float32, one analysis window per row (``window_s``, 1 s, is what the model is meant
    for); B may be 0.  Rows are independent: a window's outputs do not depend on the others.
    Raises ValueError on another shape, non-finite samples or windows shorter than
    ``model.config.min_samples`` (a caller bug: the voice step must drop or pad such windows).
    Runs under ``torch.inference_mode`` on ``model.device``.

    Models with ``speaker_norm`` (``model.config``) normalise the log-mel by the speaker's
    statistics: ``speaker``, from :func:`speaker_statistics` of the speaker's windows,
    ``(2, n_mels)`` for all rows or ``(B, 2, n_mels)`` per row; without it the batch itself is
    taken as one speaker's windows (then a row's outputs depend on the other rows).  Other
    models ignore ``speaker``.
    """
    batch = _checked(model, waveforms)
    norm = model.config.speaker_norm
    with torch.inference_mode():
        stats = (torch.as_tensor(speaker, dtype=torch.float32, device=model.device)
                 if norm and speaker is not None else None)
        out = (model.module(batch.to(model.device), stats) if norm
               else model.module(batch.to(model.device)))
        probs = torch.softmax(out.logits, dim=1)

    def to_numpy(t: torch.Tensor) -> np.ndarray:
        return t.float().cpu().numpy()

    return VoicePrediction(
        probs=to_numpy(probs),
        valence=to_numpy(out.valence),
        arousal=to_numpy(out.arousal),
        features=to_numpy(out.features),
        attention=to_numpy(out.attention),
    )


def save(
    model: VoiceEmotionModel,
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model`` as an emoray checkpoint (``models/checkpoint.py``) that :func:`load` reads.

    ``metadata`` (plain data only: str, numbers, bools, lists, dicts; the file is read with
    ``weights_only=True``) should carry provenance: training data and its licence, split,
    metrics, code revision.  ``name`` defaults to ``model.name``.
    """
    save_checkpoint(
        path,
        Checkpoint(
            arch=ARCH,
            state_dict=model.module.state_dict(),
            hparams=model.hparams,
            classes=model.classes,
            metadata={"name": model.name, **(metadata or {})},
        ),
    )


def export_torchscript(model: VoiceEmotionModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (waveform in, :class:`VoiceEmotionOutput` out) as a TorchScript file.

    The archive carries arch, name, hparams and classes, so :func:`load` restores a
    :class:`VoiceEmotionModel` from it.  Serving needs only ``torch.jit.load``: no emoray
    code and no torchaudio.  Returns the path written.
    """
    return write_torchscript(model.module, path, {
        "arch": ARCH, "hparams": model.hparams, "classes": list(model.classes),
        "metadata": {"name": model.name}})
