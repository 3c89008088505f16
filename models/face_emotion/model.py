"""Face-emotion models: load, predict, export.  Plain PyTorch (no Ray, MLflow or S3)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import Checkpoint, is_torchscript, load_checkpoint, save_checkpoint
from models.face_emotion.network import MiniXception
from operators.schema import EMOTIONS

DEFAULT_MODEL = "fer2013-mini-xception"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "fer2013_mini_xception.pt"
ARCHITECTURES: dict[str, type[nn.Module]] = {"mini-xception": MiniXception}
# ITU-R BT.601 luma, as used by the FER2013 greyscale images and PIL's "L" conversion.
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class FaceEmotionModel:
    """A loaded face-emotion network in eval mode.

    ``module(x)`` takes preprocessed (N, 1, S, S) input (:func:`preprocess`) and returns
    ``(logits (N, classes), features (N, D))``.
    """

    module: nn.Module
    name: str
    input_size: int
    classes: tuple[str, ...]
    device: torch.device


class _WithFeatures(nn.Module):
    """Adapter giving every architecture the (logits, features) interface."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_features(x)


def load(source: str | os.PathLike[str] | None = None,
         device: str | torch.device = "cpu") -> FaceEmotionModel:
    """Load a face-emotion model.

    ``source``: None or :data:`DEFAULT_MODEL` → the shipped FER2013 network; else a local
    emoray checkpoint (``models/checkpoint.py``) or a TorchScript file exported by
    :func:`export_torchscript`.  MLflow URIs are resolved to local files by the caller.
    Raises ``FileNotFoundError`` / ``ValueError`` with what was expected.
    """
    device = torch.device(device)
    path = DEFAULT_WEIGHTS if source in (None, DEFAULT_MODEL) else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"face model {path} does not exist")
    if is_torchscript(path):
        module = torch.jit.load(str(path), map_location=device).eval()
        classes = tuple(module.classes) if hasattr(module, "classes") else EMOTIONS
        size = int(module.input_size) if hasattr(module, "input_size") else 64
        return FaceEmotionModel(module, f"torchscript:{path.name}", size, classes, device)
    ckpt = load_checkpoint(path)
    if ckpt.arch not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown face architecture {ckpt.arch!r}; "
                         f"known: {sorted(ARCHITECTURES)}")
    net = ARCHITECTURES[ckpt.arch](num_classes=len(ckpt.classes))
    net.load_state_dict(ckpt.state_dict)
    module = _WithFeatures(net).to(device).eval()
    return FaceEmotionModel(module, ckpt.metadata.get("name", ckpt.arch),
                            int(ckpt.hparams.get("input_size", 64)), ckpt.classes, device)


def preprocess(crops: torch.Tensor, input_size: int = 64) -> torch.Tensor:
    """uint8 RGB crops (N, S, S, 3) → (N, 1, input_size, input_size) float in [-1, 1]."""
    x = crops.permute(0, 3, 1, 2).float()
    luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    grey = (x * luma).sum(dim=1, keepdim=True)
    if grey.shape[-1] != input_size:
        grey = F.interpolate(grey, size=(input_size, input_size), mode="bilinear",
                             antialias=True, align_corners=False)
    return grey / 127.5 - 1.0


def predict(model: FaceEmotionModel, crops: torch.Tensor | np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, classes) and features (N, D), float32, for uint8 RGB crops."""
    if isinstance(crops, np.ndarray) and not crops.flags.writeable:
        crops = crops.copy()  # Ray hands out read-only views of its object store
    crops = torch.as_tensor(crops)
    if len(crops) == 0:
        with torch.inference_mode():
            probe = model.module(torch.zeros(1, 1, model.input_size, model.input_size,
                                             device=model.device))
        return (np.zeros((0, len(model.classes)), np.float32),
                np.zeros((0, probe[1].shape[1]), np.float32))
    with torch.inference_mode():
        x = preprocess(crops.to(model.device), model.input_size)
        logits, features = model.module(x)
        probs = torch.softmax(logits, dim=1)
    return probs.cpu().numpy().astype(np.float32), features.cpu().numpy().astype(np.float32)


def save(model: FaceEmotionModel, path: str | os.PathLike[str], metadata: dict | None = None,
         ) -> None:
    """Write ``model`` as an emoray checkpoint (architecture + weights + classes)."""
    net = model.module.net if isinstance(model.module, _WithFeatures) else None
    if net is None:
        raise ValueError("only checkpoint-loaded models can be saved; TorchScript is final")
    arch = next(k for k, v in ARCHITECTURES.items() if isinstance(net, v))
    save_checkpoint(path, Checkpoint(
        arch=arch, state_dict=net.state_dict(), hparams={"input_size": model.input_size},
        classes=model.classes, metadata={"name": model.name, **(metadata or {})}))


def export_torchscript(model: FaceEmotionModel, path: str | os.PathLike[str]) -> None:
    """Script the network (input: preprocessed tensor; output: logits, features)."""
    scripted = torch.jit.script(model.module.cpu())
    model.module.to(model.device)
    scripted.save(str(path))
