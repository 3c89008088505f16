"""The checkpoint file format shared by every model in ``models/``.

A checkpoint is a ``torch.save``-d dict of plain data (loaded with ``weights_only=True``, so a
file from elsewhere cannot run code): the architecture name and its hyper-parameters, the
class names, free-form metadata (provenance, data terms, metrics) and the ``state_dict``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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
