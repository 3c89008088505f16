"""Local and remote files through fsspec, for operators.

Operators never build storage clients from credentials themselves: the pipeline passes
fsspec ``storage_options`` keyed by protocol (e.g. ``{"s3": {"client_kwargs": {...}}}``), made
on the driver by ``infra.storage``.  Remote objects are staged to local disk for decoders, and
outputs are written atomically.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

StorageOptions = Mapping[str, Mapping[str, Any]]


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def protocol_of(uri: str) -> str:
    return uri.split("://", 1)[0] if is_remote(uri) else "file"


def open_fs(uri: str, storage_options: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving ``uri`` (with that protocol's options) and the path within it."""
    return fsspec.core.url_to_fs(uri, **dict(storage_options.get(protocol_of(uri), {})))


def join(base: str, *parts: str) -> str:
    """Join URI/path segments with '/' (S3 keys and POSIX paths alike)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def download(uri: str, storage_options: StorageOptions, dest: Path) -> None:
    """Stream the object ``uri`` to the local file ``dest`` (8 MiB at a time, never whole in
    memory), atomically: ``dest`` appears complete or not at all.  Storage errors propagate as
    ``OSError`` subclasses (``FileNotFoundError``, ``PermissionError``, ``TimeoutError``, …)."""
    fs, path = open_fs(uri, storage_options)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=8 << 20)
        os.replace(tmp, dest)
    except IndexError as exc:
        # s3fs's ranged read reads ``args[0]`` of the argument-less timeout fsspec raises
        # when a body stalls on every try, turning a timeout into an IndexError.
        if isinstance(exc.__context__, TimeoutError):
            raise TimeoutError(f"timed out reading {uri}: the body stalled on every "
                               "retry") from exc.__context__
        raise
    finally:
        tmp.unlink(missing_ok=True)


def make_local_atomic(path: Path, make: Callable[[Path], object]) -> None:
    """``make(tmp)`` into a hidden temporary file beside the local ``path``, then rename it
    into place (atomic on POSIX): a reader never sees half a file, and a failure leaves
    nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        make(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(table: pa.Table, uri: str, storage_options: StorageOptions) -> None:
    """Write ``table`` to ``uri`` so readers never see a partial file.

    Local: write a hidden temporary file beside the target, then rename (atomic on POSIX).
    Object stores: a single PUT is atomic, so the object appears whole or not at all.
    """
    fs, path = open_fs(uri, storage_options)
    parent = str(PurePosixPath(path).parent)
    fs.makedirs(parent, exist_ok=True)
    if is_remote(uri):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        fs.pipe_file(path, sink.getvalue().to_pybytes())
        return
    make_local_atomic(Path(path), lambda tmp: pq.write_table(table, tmp))


def remove(uri: str, storage_options: StorageOptions) -> None:
    """Delete ``uri`` if it exists (drops a stale timeline of a clip that now fails)."""
    fs, path = open_fs(uri, storage_options)
    if fs.exists(path):
        fs.rm(path)
