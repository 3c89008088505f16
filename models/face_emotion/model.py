"""Build, load, run, save and export face-emotion models (plain PyTorch: no Ray, MLflow or S3).

* :data:`ARCHITECTURES` names the trainable networks of :mod:`models.face_emotion.network`.
  A model's hyper-parameters (:func:`resolve_hparams`) hold its input conventions (size,
  grey or RGB, normalisation) next to the network's own settings, so a checkpoint alone
  reproduces its predictions.
* :func:`build` makes a freshly initialised model for training; :func:`load` reads the
  shipped FER2013 network, an emoray checkpoint (``models/checkpoint.py``) or a TorchScript
  file written by :func:`export_torchscript`; :func:`save` writes a checkpoint.
* :func:`preprocess` turns uint8 RGB face crops into a network's input; :func:`predict` runs
  it and returns probabilities over :data:`operators.schema.EMOTIONS` and the features.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import (
    FORMAT,
    TORCHSCRIPT_META,
    Checkpoint,
    is_torchscript,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    write_torchscript,
)
from models.face_emotion.network import VGG13, FaceResNet, MiniXception
from operators.schema import EMOTIONS

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "fer2013-mini-xception"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "fer2013_mini_xception.pt"

# ITU-R BT.601 luma, as used by the FER2013 greyscale images and PIL's "L" conversion.
_LUMA = (0.299, 0.587, 0.114)
# Default normalisation of [0, 1] pixels: grey to [-1, 1] (FER2013 convention of the shipped
# network); RGB with the ImageNet statistics, which user-supplied ImageNet weights expect.
_GREY_MEAN_STD = ([0.5], [0.5])
_RGB_MEAN_STD = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# Smallest input every architecture can reduce to a non-empty final feature map.
MIN_INPUT_SIZE = 32


@dataclass(frozen=True)
class Architecture:
    """A trainable network: its constructor and the input it is meant for by default.

    ``network(num_classes=..., in_channels=..., **arch_hparams)`` builds it; every other
    keyword argument of ``network`` is a hyper-parameter with the constructor's default.
    """

    network: Callable[..., nn.Module]
    input_size: int
    input_channels: int


ARCHITECTURES: dict[str, Architecture] = {
    # The fer package's network; {"base_width": 16} is a 4× wider variant (~0.2M parameters).
    "mini-xception": Architecture(MiniXception, input_size=64, input_channels=1),
    "resnet18": Architecture(partial(FaceResNet, 18), input_size=112, input_channels=3),
    "resnet50": Architecture(partial(FaceResNet, 50), input_size=112, input_channels=3),
    "vgg13": Architecture(VGG13, input_size=64, input_channels=1),
}
"""Architecture name (as stored in checkpoints) → :class:`Architecture`."""

@dataclass(frozen=True)
class InputSpec:
    """What a network takes: ``channels`` (1: BT.601 grey, 3: RGB) × ``size`` × ``size``,
    pixel values scaled to [0, 1], then ``(x - mean) / std`` per channel."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> InputSpec:
        return cls(int(hparams["input_size"]), int(hparams["input_channels"]),
                   tuple(hparams["input_mean"]), tuple(hparams["input_std"]))


@dataclass
class FaceEmotionModel:
    """A face-emotion network in eval mode on ``device``.

    ``module(x)`` takes a preprocessed batch (:func:`preprocess` with :attr:`input_spec`) and
    returns ``(logits (N, classes), features (N, feature_dim))``; for checkpoint-loaded and
    built models it is a wrapper whose ``net`` is the :mod:`~models.face_emotion.network`
    module, for TorchScript files the scripted wrapper.  ``hparams`` is complete (defaults
    filled in); ``name`` labels the weights in outputs and logs.
    """

    module: nn.Module
    name: str
    arch: str
    hparams: dict[str, Any]
    classes: tuple[str, ...]
    device: torch.device
    feature_dim: int

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_hparams(self.hparams)


class _WithFeatures(nn.Module):
    """Adapter giving every architecture the (logits, features) ``forward``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_features(x)


def _network_defaults(arch: str) -> dict[str, Any]:
    params = inspect.signature(ARCHITECTURES[arch].network).parameters
    return {name: p.default for name, p in params.items()
            if name not in ("num_classes", "in_channels")}


def resolve_hparams(arch: str, hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """All hyper-parameters of ``arch``: the given ones over the defaults.

    Keys: ``input_size`` (square side in px, ≥ :data:`MIN_INPUT_SIZE`), ``input_channels``
    (1 grey or 3 RGB), ``input_mean``/``input_std`` (per channel, on [0, 1] pixels; by
    default [0.5]/[0.5] for grey, the ImageNet statistics for RGB), ``init_weights`` (path
    of a state dict or emoray checkpoint that :func:`build` starts from, else None: random
    init), and the network constructor's own keyword arguments.  Tuples become lists, so the
    result survives JSON and checkpoints unchanged.  Raises ValueError for an unknown
    architecture or key, or inconsistent input conventions.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown face architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    defaults = {"input_size": spec.input_size, "input_channels": spec.input_channels,
                "input_mean": None, "input_std": None, "init_weights": None,
                **_network_defaults(arch)}
    unknown = set(hparams or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown hparams {sorted(unknown)} for face architecture {arch!r}; "
                         f"known: {sorted(defaults)}")
    resolved = {key: list(value) if isinstance(value, tuple) else value
                for key, value in {**defaults, **(hparams or {})}.items()}
    channels = resolved["input_channels"]
    if channels not in (1, 3):
        raise ValueError(f"input_channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if not isinstance(resolved["input_size"], int) or resolved["input_size"] < MIN_INPUT_SIZE:
        raise ValueError(f"input_size must be an int ≥ {MIN_INPUT_SIZE}, "
                         f"got {resolved['input_size']!r}")
    default_mean, default_std = _GREY_MEAN_STD if channels == 1 else _RGB_MEAN_STD
    resolved["input_mean"] = [float(v) for v in resolved["input_mean"] or default_mean]
    resolved["input_std"] = [float(v) for v in resolved["input_std"] or default_std]
    if len(resolved["input_mean"]) != channels or len(resolved["input_std"]) != channels:
        raise ValueError(f"input_mean and input_std need {channels} values each, got "
                         f"{resolved['input_mean']} and {resolved['input_std']}")
    if min(resolved["input_std"]) <= 0:
        raise ValueError(f"input_std must be positive, got {resolved['input_std']}")
    if resolved["init_weights"] is not None:
        resolved["init_weights"] = str(resolved["init_weights"])
    return resolved


def _network(arch: str, hparams: Mapping[str, Any]) -> nn.Module:
    kwargs = {key: hparams[key] for key in _network_defaults(arch)}
    return ARCHITECTURES[arch].network(num_classes=len(EMOTIONS),
                                       in_channels=hparams["input_channels"], **kwargs)


def _ready(net: nn.Module, arch: str, hparams: dict[str, Any], name: str,
           device: str | torch.device) -> FaceEmotionModel:
    device = torch.device(device)
    module = _WithFeatures(net).to(device).eval()
    return FaceEmotionModel(module, name, arch, hparams, EMOTIONS, device, net.feature_dim)


def _initial_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: an emoray checkpoint's, or a plain ``torch.save``-d one."""
    if not path.is_file():
        raise FileNotFoundError(f"init_weights {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as exc:
        raise ValueError(f"init_weights {path} is not a torch state dict ({exc})") from exc
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"init_weights {path} holds neither a state dict nor an emoray "
                         "checkpoint")
    return raw


def _load_initial_weights(net: nn.Module, path: Path) -> None:
    """Copy ``path``'s weights into ``net``, adapting what a backbone's origin changes.

    A classification head of another shape (e.g. ImageNet's 1000 classes) keeps its random
    init; RGB filters of the first convolution are summed for a grey network.  Anything else
    that does not fit raises ValueError, so a wrong file cannot half-load silently.
    """
    own = net.state_dict()
    adapted, skipped, problems = {}, [], []
    for key, value in _initial_state(path).items():
        target = own.get(key)
        if target is None:
            problems.append(f"unexpected {key}")
        elif value.shape == target.shape:
            adapted[key] = value
        elif (key == net.INPUT_CONV and target.shape[1] == 1 and value.shape[1] == 3
              and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            # A grey image is R = G = B, so the summed filter responds as the RGB one did
            # (up to the per-channel normalisation).
            adapted[key] = value.sum(dim=1, keepdim=True)
        elif key.startswith(net.HEAD):
            skipped.append(key)
        else:
            problems.append(f"{key} {tuple(value.shape)} ≠ {tuple(target.shape)}")
    problems += [f"missing {key}" for key in own
                 if key not in adapted and not key.startswith(net.HEAD)
                 # BatchNorm fills a missing counter itself (older torchvision files lack it)
                 and not key.endswith("num_batches_tracked")]
    if problems:
        raise ValueError(f"init_weights {path} do not fit this network: {problems[:5]}")
    net.load_state_dict(adapted, strict=False)
    if skipped:
        logger.info("init_weights %s: head %s of another shape left at random init",
                    path, skipped)


def build(arch: str, hparams: Mapping[str, Any] | None = None, seed: int = 0,
          device: str | torch.device = "cpu") -> FaceEmotionModel:
    """A freshly initialised model (eval mode; call ``model.module.train()`` to train it).

    ``hparams``: see :func:`resolve_hparams`.  The weights depend only on ``arch``, the
    hparams and ``seed`` (plus ``init_weights``' content when given); the global torch RNG is
    left as it was.  Nothing is downloaded.
    """
    hparams = resolve_hparams(arch, hparams)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _network(arch, hparams)
    init = hparams["init_weights"]
    if init is not None:
        _load_initial_weights(net, Path(init))
    name = f"{arch}-untrained-seed{seed}" if init is None else f"{arch}-init-{Path(init).stem}"
    return _ready(net, arch, hparams, name, device)


def load(source: str | os.PathLike[str] | None = None,
         device: str | torch.device = "cpu") -> FaceEmotionModel:
    """Load a face-emotion model.

    ``source``: None or :data:`DEFAULT_MODEL` → the shipped FER2013 network; else a local
    emoray checkpoint (``models/checkpoint.py``) or a TorchScript file exported by
    :func:`export_torchscript` (recognised by content).  MLflow URIs are resolved to local
    files by the caller.  ``name`` is the metadata's ``name``, else the architecture.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file of another
    kind, an unknown architecture or hparams, classes other than :data:`EMOTIONS`, or
    weights that do not fit the architecture.
    """
    path = DEFAULT_WEIGHTS if source in (None, DEFAULT_MODEL) else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"face model {path} does not exist")
    if is_torchscript(path):
        return _load_torchscript(path, device)
    checkpoint = load_checkpoint(path)
    hparams = _checked(path, checkpoint.arch, checkpoint.classes, checkpoint.hparams)
    net = _network(checkpoint.arch, hparams)
    load_weights(net, checkpoint.state_dict, path, hparams)
    name = str(checkpoint.metadata.get("name") or checkpoint.arch)
    logger.info("loaded face model %s (%s) from %s", name, checkpoint.arch, path)
    return _ready(net, checkpoint.arch, hparams, name, device)


def _checked(path: Path, arch: str, classes: tuple[str, ...],
             hparams: Mapping[str, Any]) -> dict[str, Any]:
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown face architecture {arch!r}; "
                         f"known: {sorted(ARCHITECTURES)}")
    if tuple(classes) != EMOTIONS:
        raise ValueError(f"{path} predicts classes {list(classes)}, expected {list(EMOTIONS)}")
    try:
        return resolve_hparams(arch, hparams)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _load_torchscript(path: Path, device: str | torch.device) -> FaceEmotionModel:
    device = torch.device(device)
    extra = {TORCHSCRIPT_META: ""}
    module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    try:
        meta = json.loads(extra[TORCHSCRIPT_META])
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or "arch" not in meta:
        raise ValueError(f"{path} is a TorchScript file without {TORCHSCRIPT_META}; export "
                         "face models with models.face_emotion.export_torchscript")
    hparams = _checked(path, meta["arch"], tuple(meta.get("classes", ())), meta["hparams"])
    name = str(meta.get("name") or path.stem)
    logger.info("loaded TorchScript face model %s (%s) from %s", name, meta["arch"], path)
    return FaceEmotionModel(module.eval(), name, meta["arch"], hparams, EMOTIONS, device,
                            int(meta["feature_dim"]))


def preprocess(crops: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 RGB crops (N, H, W, 3) → float (N, spec.channels, spec.size, spec.size).

    Grey is BT.601 luma; resizing is bilinear with antialiasing; then ``spec``'s
    normalisation.  Runs on the crops' device.  Raises ValueError for another dtype or shape.
    """
    if crops.dtype != torch.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"face crops must be uint8 (N, H, W, 3) RGB, got {crops.dtype} "
                         f"{tuple(crops.shape)}")
    x = crops.permute(0, 3, 1, 2).float()
    if spec.channels == 1:
        luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * luma).sum(dim=1, keepdim=True)
    if len(x) and tuple(x.shape[-2:]) != (spec.size, spec.size):
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear", antialias=True,
                          align_corners=False)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) * 255
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) * 255
    return (x - mean) / std


def predict(model: FaceEmotionModel, crops: torch.Tensor | np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, classes) and features (N, feature_dim), float32 numpy.

    ``crops`` are uint8 RGB faces (N, H, W, 3), any square size (the pipeline's are 112 px);
    N may be 0.  Rows are independent (eval mode).  Raises ValueError for another dtype or
    shape.
    """
    if isinstance(crops, np.ndarray) and not crops.flags.writeable:
        crops = crops.copy()  # Ray hands out read-only views of its object store
    crops = torch.as_tensor(crops)
    with torch.inference_mode():
        x = preprocess(crops.to(model.device), model.input_spec)
        if len(x) == 0:
            return (np.zeros((0, len(model.classes)), np.float32),
                    np.zeros((0, model.feature_dim), np.float32))
        logits, features = model.module(x)
        probs = torch.softmax(logits.float(), dim=1)
    return probs.cpu().numpy(), features.float().cpu().numpy()


def save(model: FaceEmotionModel, path: str | os.PathLike[str],
         metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``model`` as an emoray checkpoint (arch, hparams, weights, classes).

    ``metadata`` (plain data: the file is read with ``weights_only=True``) should carry
    provenance: training data and its licence, metrics, code revision; ``name`` defaults to
    ``model.name``.  Raises ValueError for a TorchScript-loaded model.
    """
    if not isinstance(model.module, _WithFeatures):
        raise ValueError("only built or checkpoint-loaded models can be saved; TorchScript "
                         "is final")
    save_checkpoint(path, Checkpoint(
        arch=model.arch, state_dict=model.module.net.state_dict(), hparams=model.hparams,
        classes=model.classes, metadata={"name": model.name, **(metadata or {})}))


def export_torchscript(model: FaceEmotionModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as TorchScript (input: :func:`preprocess`-ed tensor; output: logits,
    features), with arch, name, hparams and classes inside, so :func:`load` restores it and
    serving needs only ``torch.jit.load``."""
    write_torchscript(model.module, path, {
        "arch": model.arch, "name": model.name, "hparams": model.hparams,
        "classes": list(model.classes), "feature_dim": model.feature_dim})
