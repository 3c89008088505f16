"""Build, load, run, save and export the clip-level temporal head.

The network is :class:`models.temporal.network.TemporalHead`; this module adds the
numpy-in/numpy-out :func:`predict`, the checkpoint format of :mod:`models.checkpoint`, and
TorchScript export (arch and hyper-parameters in the extra file ``emoray.json``, so
:func:`load` reads both formats to the same :class:`TemporalModel`).
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
from models.temporal.network import TemporalHead, TemporalOutput
from operators.schema import EMOTIONS

logger = logging.getLogger(__name__)

ARCH = "temporal-lstm"
"""Architecture name stored in checkpoints."""



@dataclass
class TemporalModel:
    """A temporal head ready for :func:`predict` (in eval mode, on ``device``).

    ``hparams`` is complete (defaults filled in); ``input_dim`` must equal the fusion model's
    ``feature_dim``.
    """

    network: nn.Module
    hparams: dict[str, Any]
    device: torch.device
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    arch: str = ARCH

    @property
    def input_dim(self) -> int:
        return self.hparams["input_dim"]


@dataclass(frozen=True)
class TemporalPrediction:
    """Per-window outputs of :func:`predict` for B clips padded to L windows (numpy).

    ``probs`` (B, L, 7) float32 in order ``EMOTIONS``; ``valence``/``arousal`` (B, L) float32
    in [-1, 1]; ``lengths`` (B,) int64.  Steps at or after ``lengths[b]`` are NaN: there is no
    window there.
    """

    probs: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    lengths: np.ndarray


def resolve_hparams(hparams: dict[str, Any] | None) -> dict[str, Any]:
    """All constructor arguments of :class:`TemporalHead`: the given ones over the defaults.

    Raises ValueError for an unknown hyper-parameter.
    """
    defaults = {name: p.default for name, p in inspect.signature(TemporalHead).parameters.items()}
    unknown = set(hparams or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown hparams {sorted(unknown)} for {ARCH}; known: {sorted(defaults)}")
    return {**defaults, **(hparams or {})}


def build(hparams: dict[str, Any] | None = None, seed: int = 0) -> TemporalModel:
    """A freshly initialised head (weights depend only on ``hparams`` and ``seed``).

    The global torch RNG is left as it was.
    """
    hparams = resolve_hparams(hparams)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = TemporalHead(**hparams)
    return TemporalModel(network.eval(), hparams, torch.device("cpu"), ARCH)


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> TemporalModel:
    """Load a temporal-head checkpoint (:mod:`models.checkpoint`) or TorchScript export.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a
    temporal head, has other classes than ``EMOTIONS``, or whose weights do not fit.
    """
    device = torch.device(device)
    found = read_model_file(path, device, "temporal head", [ARCH], EMOTIONS)
    hparams = resolve_hparams(found.hparams)
    network = found.scripted
    if network is None:
        network = TemporalHead(**hparams)
        load_weights(network, found.state_dict, path, hparams)
    network = network.to(device).eval()
    name = found.metadata.get("name", Path(path).stem)
    logger.info("loaded temporal head %s from %s on %s", name, path, device)
    return TemporalModel(network, hparams, device, name, found.metadata)


def save(model: TemporalModel, path: str | os.PathLike[str],
         metadata: dict[str, Any] | None = None) -> None:
    """Write ``model`` as an emoray checkpoint; ``metadata`` is merged over the model's own."""
    save_checkpoint(path, Checkpoint(
        arch=ARCH, state_dict=model.network.state_dict(), hparams=model.hparams,
        classes=EMOTIONS, metadata={**model.metadata, **(metadata or {})}))


def export_torchscript(model: TemporalModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as TorchScript (arch and hparams inside), loadable by :func:`load`."""
    write_torchscript(model.network, path, {
        "arch": ARCH, "hparams": model.hparams, "classes": list(EMOTIONS),
        "metadata": model.metadata})


def predict(model: TemporalModel, features: Any, lengths: Any = None) -> TemporalPrediction:
    """Per-window emotions for B clips (numpy arrays or tensors; B may be 0).

    ``features`` (B, L, input_dim): row b holds the fused features of clip b's first
    ``lengths[b]`` windows in time order, then padding (ignored, may be NaN).  ``lengths``
    (B,) ints in [1, L]; None means every row is a whole clip of L windows.  Raises
    ValueError for shapes that do not fit, lengths out of range or non-finite features
    inside a clip.
    """
    x = torch.as_tensor(features if isinstance(features, torch.Tensor) else np.asarray(features))
    if x.ndim != 3 or x.shape[2] != model.input_dim:
        raise ValueError(f"features must be (B, L, {model.input_dim}), got {tuple(x.shape)}")
    batch, max_len = x.shape[0], x.shape[1]
    if lengths is None:
        lengths = torch.full((batch,), max_len, dtype=torch.int64)
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64).cpu()
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must be ({batch},), got {tuple(lengths.shape)}")
    if batch and (lengths.min() < 1 or lengths.max() > max_len):
        raise ValueError(f"lengths must lie in [1, {max_len}], got {lengths.tolist()}")
    x = x.to(torch.float32)
    steps = torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)
    if not torch.isfinite(x[steps]).all():
        raise ValueError("features has non-finite values inside a clip (before its length)")

    if batch == 0:  # the LSTM cannot pack an empty batch
        empty = np.zeros((0, max_len), np.float32)
        return TemporalPrediction(np.zeros((0, max_len, len(EMOTIONS)), np.float32), empty,
                                  empty.copy(), lengths.numpy())
    with torch.inference_mode():
        out = TemporalOutput(*model.network(x.to(model.device), lengths.to(model.device)))
    pad = ~steps.numpy()
    probs = torch.softmax(out.logits, -1).float().cpu().numpy()
    valence = out.valence.float().cpu().numpy()
    arousal = out.arousal.float().cpu().numpy()
    probs[pad] = np.nan
    valence[pad] = np.nan
    arousal[pad] = np.nan
    return TemporalPrediction(probs, valence, arousal, lengths.numpy())
