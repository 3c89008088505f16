"""How corpora are listed from storage: every file under a root, named as the tables name it."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import fsspec

from operators.io.files import StorageOptions, open_fs

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".mp4", ".flv")
"""Extensions the speech-corpus listings keep (RAVDESS ships .wav/.mp4, CREMA-D .wav/.mp3/.flv)."""
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def file_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """How a listed file is named in the table: a plain path locally, else ``protocol://path``."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return path
    return f"{protocol}://{path}"


def list_files(root: str, storage_options: StorageOptions | None
               ) -> list[tuple[str, PurePosixPath]]:
    """Every file under ``root`` (recursive) as (uri, path relative to root), sorted by uri."""
    fs, path = open_fs(root, storage_options or {})
    path = path.rstrip("/")
    if file_uri(fs, path) == path:  # local: name files without "..", as the OS resolves them
        path = os.path.normpath(path)
    if not fs.isdir(path):
        raise FileNotFoundError(f"corpus folder {root!r} does not exist or is not a folder")
    files = []
    for name in sorted(fs.find(path)):
        files.append((file_uri(fs, name), PurePosixPath(name).relative_to(path)))
    return files
