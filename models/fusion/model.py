"""Build, load, run, save and export the window-level face–voice fusion model.

The networks and their input contract are in :mod:`models.fusion.network`; this module adds
the numpy-in/numpy-out :func:`predict`, the checkpoint format of :mod:`models.checkpoint`, and
TorchScript export.  A TorchScript file carries its architecture and hyper-parameters in an
extra file (``emoray.json``), so :func:`load` reads both formats to the same
:class:`FusionModel`.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field
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
from models.fusion.network import (
    FUSION_MODES,
    AttentionBilinearFusion,
    DecisionFusion,
    FusionOutput,
)
from operators.schema import EMOTIONS

logger = logging.getLogger(__name__)

ARCHS: dict[str, type[nn.Module]] = {
    "attention-bilinear": AttentionBilinearFusion,
    "decision": DecisionFusion,
}
"""Architecture name (as stored in checkpoints) → network class."""



@dataclass
class FusionModel:
    """A fusion network ready for :func:`predict` (in eval mode, on ``device``).

    ``hparams`` is complete (defaults filled in); ``input_dims`` are the face and voice
    feature sizes it expects and ``feature_dim`` the size of its fused features (the temporal
    head's ``input_dim``).
    """

    network: nn.Module
    arch: str
    hparams: dict[str, Any]
    device: torch.device
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def input_dims(self) -> tuple[int, int]:
        return self.hparams["face_dim"], self.hparams["voice_dim"]

    @property
    def feature_dim(self) -> int:
        if self.arch == "decision":
            return len(EMOTIONS) + 2  # fused probabilities, valence, arousal
        return self.hparams["fused_dim"]


@dataclass(frozen=True)
class FusionPrediction:
    """Per-window outputs of :func:`predict`, all numpy with B rows.

    ``probs`` (B, 7) float32 in order ``EMOTIONS``; ``valence``/``arousal`` (B,) float32 in
    [-1, 1]; ``features`` (B, feature_dim) float32; ``fusion_mode`` (B,) str from
    ``FUSION_MODES``.  All values are finite, also where ``fusion_mode`` is ``"none"``: the
    caller writes nulls there.
    """

    probs: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    features: np.ndarray
    fusion_mode: np.ndarray


def resolve_hparams(arch: str, hparams: dict[str, Any] | None) -> dict[str, Any]:
    """All constructor arguments of ``arch``: the given ones over the defaults.

    Raises ValueError for an unknown architecture or hyper-parameter.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown fusion arch {arch!r}; expected one of {sorted(ARCHS)}")
    defaults = {name: p.default
                for name, p in inspect.signature(ARCHS[arch]).parameters.items()}
    unknown = set(hparams or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown hparams {sorted(unknown)} for fusion arch {arch!r}; "
                         f"known: {sorted(defaults)}")
    return {**defaults, **(hparams or {})}


def build(arch: str = "attention-bilinear", hparams: dict[str, Any] | None = None,
          seed: int = 0) -> FusionModel:
    """A freshly initialised model (weights depend only on ``arch``, ``hparams`` and ``seed``).

    The global torch RNG is left as it was.
    """
    hparams = resolve_hparams(arch, hparams)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = ARCHS[arch](**hparams)
    return FusionModel(network.eval(), arch, hparams, torch.device("cpu"), f"fusion-{arch}")


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> FusionModel:
    """Load a fusion checkpoint (:mod:`models.checkpoint`) or TorchScript export.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a
    fusion model, has other classes than ``EMOTIONS``, or whose weights do not fit its arch.
    """
    device = torch.device(device)
    found = read_model_file(path, device, "fusion", ARCHS, EMOTIONS)
    hparams = resolve_hparams(found.arch, found.hparams)
    network = found.scripted
    if network is None:
        network = ARCHS[found.arch](**hparams)
        load_weights(network, found.state_dict, path, hparams)
    network = network.to(device).eval()
    name = found.metadata.get("name", Path(path).stem)
    logger.info("loaded fusion model %s (%s) from %s on %s", name, found.arch, path, device)
    return FusionModel(network, found.arch, hparams, device, name, found.metadata)


def save(model: FusionModel, path: str | os.PathLike[str],
         metadata: dict[str, Any] | None = None) -> None:
    """Write ``model`` as an emoray checkpoint; ``metadata`` is merged over the model's own."""
    save_checkpoint(path, Checkpoint(
        arch=model.arch, state_dict=model.network.state_dict(), hparams=model.hparams,
        classes=EMOTIONS, metadata={**model.metadata, **(metadata or {})}))


def export_torchscript(model: FusionModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as TorchScript (arch and hparams inside), loadable by :func:`load`."""
    write_torchscript(model.network, path, {
        "arch": model.arch, "hparams": model.hparams, "classes": list(EMOTIONS),
        "metadata": model.metadata})


def _tensor(name: str, value: Any, dtype: torch.dtype, ndim: int) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(tensor.shape)}")
    return tensor.to(dtype)


def predict(model: FusionModel, face_feats: Any, face_mask: Any, voice_feats: Any,
            voice_mask: Any, speaking: Any) -> FusionPrediction:
    """Fuse B windows (numpy arrays or tensors; contract in :mod:`models.fusion.network`).

    ``face_feats`` (B, T, face_dim), ``face_mask`` (B, T) bool, ``voice_feats``
    (B, R, voice_dim), ``voice_mask`` (B,) bool, ``speaking`` (B,) in [0, 1].  Values at
    masked positions are ignored and may be NaN; a non-finite value at a present position, or
    a shape that does not fit, raises ValueError.
    """
    face = _tensor("face_feats", face_feats, torch.float32, 3)
    face_present = _tensor("face_mask", face_mask, torch.bool, 2)
    voice = _tensor("voice_feats", voice_feats, torch.float32, 3)
    voice_present = _tensor("voice_mask", voice_mask, torch.bool, 1)
    speech = _tensor("speaking", speaking, torch.float32, 1)
    face_dim, voice_dim = model.input_dims
    batch = face.shape[0]
    if face.shape[2] != face_dim or voice.shape[2] != voice_dim:
        raise ValueError(f"model expects face_dim={face_dim}, voice_dim={voice_dim}; got "
                         f"face_feats {tuple(face.shape)}, voice_feats {tuple(voice.shape)}")
    if (face_present.shape != face.shape[:2] or voice.shape[0] != batch
            or voice_present.shape != (batch,) or speech.shape != (batch,)):
        raise ValueError(
            f"inconsistent shapes: face_feats {tuple(face.shape)}, face_mask "
            f"{tuple(face_present.shape)}, voice_feats {tuple(voice.shape)}, voice_mask "
            f"{tuple(voice_present.shape)}, speaking {tuple(speech.shape)}")
    if face.shape[1] == 0 or voice.shape[1] == 0:
        raise ValueError("face_feats needs T >= 1 frames and voice_feats R >= 1 regions, also "
                         "when all are masked (pad with masked entries)")
    if not torch.isfinite(face[face_present]).all():
        raise ValueError("face_feats has non-finite values at frames where face_mask is true")
    if not torch.isfinite(voice[voice_present]).all():
        raise ValueError("voice_feats has non-finite values in windows where voice_mask is true")
    if not torch.isfinite(speech[voice_present]).all():
        raise ValueError("speaking has non-finite values in windows where voice_mask is true")

    device = model.device
    with torch.inference_mode():
        out = FusionOutput(*model.network(face.to(device), face_present.to(device),
                                          voice.to(device), voice_present.to(device),
                                          speech.to(device)))
    return FusionPrediction(
        probs=torch.softmax(out.logits, -1).float().cpu().numpy(),
        valence=out.valence.float().cpu().numpy(),
        arousal=out.arousal.float().cpu().numpy(),
        features=out.features.float().cpu().numpy(),
        fusion_mode=np.asarray(FUSION_MODES)[out.mode.cpu().numpy()],
    )
