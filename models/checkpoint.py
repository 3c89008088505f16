"""The checkpoint file format shared by every model in ``models/``.

A checkpoint is a ``torch.save``-d dict of plain data (loaded with ``weights_only=True``, so a
file from elsewhere cannot run code): the architecture name and its hyper-parameters, the
class names, free-form metadata (provenance, data terms, metrics) and the ``state_dict``.
"""

from __future__ import annotations

import copy
import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "emoray-checkpoint"


@dataclass
class Checkpoint:
    arch: str
    state_dict: dict[str, torch.Tensor]
    hparams: dict[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": FORMAT, "arch": checkpoint.arch, "hparams": dict(checkpoint.hparams),
        "classes": list(checkpoint.classes), "metadata": dict(checkpoint.metadata),
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.state_dict.items()},
    }, path)


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """TorchScript archives are zip files holding a ``code/`` folder."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint; clear errors for a missing file or a file of another kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive
        raise ValueError(f"{path} is not a torch checkpoint (not a zip archive)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{path} is not a torch checkpoint ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"{path} is not an {FORMAT} file (expected a dict with "
                         f"format={FORMAT!r}, arch, hparams, classes, state_dict)")
    return Checkpoint(arch=raw["arch"], state_dict=raw["state_dict"],
                      hparams=raw.get("hparams", {}), classes=tuple(raw.get("classes", ())),
                      metadata=raw.get("metadata", {}))


TORCHSCRIPT_META = "emoray.json"
"""Extra file inside an exported TorchScript archive: arch, hparams, classes, metadata."""


@dataclass
class ModelFile:
    """What a model file holds: a checkpoint's ``state_dict`` or a TorchScript ``scripted``
    module (exactly one is set), with the same description either way."""

    arch: str
    classes: tuple[str, ...]
    hparams: dict[str, Any]
    metadata: dict[str, Any]
    state_dict: dict[str, torch.Tensor] | None = None
    scripted: torch.jit.ScriptModule | None = None


def read_model_file(path: str | os.PathLike[str], device: torch.device | str, kind: str,
                    archs: Iterable[str], classes: tuple[str, ...]) -> ModelFile:
    """Read an emoray checkpoint or a TorchScript export written by :func:`write_torchscript`.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming ``kind``) for
    another kind of file, an architecture not in ``archs`` or other ``classes``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} model {path} does not exist")
    if is_torchscript(path):
        extra = {TORCHSCRIPT_META: ""}
        scripted = torch.jit.load(str(path), map_location=torch.device(device),
                                  _extra_files=extra)
        try:
            meta = json.loads(extra[TORCHSCRIPT_META])
        except json.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict):
            raise ValueError(f"{path} is a TorchScript file without {TORCHSCRIPT_META}: "
                             f"export {kind} models with their export_torchscript()")
        model_file = ModelFile(meta["arch"], tuple(meta["classes"]), meta.get("hparams", {}),
                               meta.get("metadata", {}), scripted=scripted)
    else:
        ckpt = load_checkpoint(path)
        model_file = ModelFile(ckpt.arch, ckpt.classes, ckpt.hparams, ckpt.metadata,
                               state_dict=ckpt.state_dict)
    archs = sorted(archs)
    if model_file.arch not in archs:
        raise ValueError(f"{path} holds arch {model_file.arch!r}, not a {kind} model "
                         f"(expected one of {archs})")
    if model_file.classes != tuple(classes):
        raise ValueError(f"{path} predicts classes {list(model_file.classes)}, "
                         f"expected {list(classes)}")
    return model_file


def load_weights(module: nn.Module, state_dict: dict[str, torch.Tensor], path: Path | str,
                 hparams: dict[str, Any]) -> None:
    """``load_state_dict`` with a clear error when the weights do not fit the hparams."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit hparams {hparams}: {exc}") from exc


def write_torchscript(module: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any]
                      ) -> Path:
    """Script a CPU copy of ``module`` (the live one stays on its device) and save it with
    ``meta`` (arch, hparams, classes, metadata) inside, so it loads without emoray's code."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(module, torch.jit.ScriptModule):
        module = torch.jit.script(copy.deepcopy(module).cpu().eval())
    torch.jit.save(module, str(path), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})
    return path
