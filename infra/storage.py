"""Object storage configuration and input listing, on the driver.

S3 goes through s3fs with the standard AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
…) plus an optional endpoint override, so MinIO, Ceph, R2 or a local test server work the
same as AWS.  Operators receive the resulting fsspec ``storage_options``, not this config: the
client timeouts and retry policy travel in them, so every client built from them (the driver's
listing, the workers' staging reads and Parquet writes) gets the same ones.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field

from operators.io.files import open_fs

logger = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")
_MANIFEST_SUFFIXES = (".txt", ".csv", ".lst")


class StorageConfig(BaseModel):
    """How to reach object storage.  ``endpoint_url`` overrides AWS's (e.g. a MinIO server);
    when unset, ``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL`` are honoured.

    Timeouts and retries go to botocore (``botocore.config.Config`` through s3fs's
    ``config_kwargs``).  ``read_timeout_s`` is the longest wait for the next bytes of a response
    (aiohttp's ``sock_read``), not a limit on a whole transfer.  Each request is tried up to
    ``max_attempts`` times, the first included; ``standard`` mode retries throttling
    (``SlowDown``), 500/502/503/504, timeouts and dropped connections after a random wait of
    up to 1, 2, 4, … s (at most 20 s), and ``adaptive`` also slows the client's own request
    rate after throttling.  On top of that, s3fs itself (5 tries, fixed in s3fs) repeats a
    call that still ends in a timeout, a dropped connection or ``SlowDown``, and repeats a
    ranged read again around that (it also covers a body that stalls after the headers): an
    object that never answers is tried up to 25 × ``max_attempts`` times before its clip
    becomes a ``read_error``.  Failed connections and 500/503s other than ``SlowDown`` get
    botocore's attempts only; 403 and 404 are not retried.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = None
    region: str | None = None
    anon: bool = False
    # A TCP/TLS handshake with S3 takes milliseconds: 10 s rides out a congested link without
    # waiting botocore's 60 s on an endpoint that is down.
    connect_timeout_s: float = Field(10.0, gt=0)
    # S3 sends a response's first bytes within about a second even for a multi-GB object, and
    # this is an idle limit, not one on the transfer: 60 s (the AWS SDKs' usual socket
    # timeout) fires only on a connection that has stalled, even on a slow link.
    read_timeout_s: float = Field(60.0, gt=0)
    # 500/503s other than SlowDown are retried by botocore alone: 5 tries (waits of up to
    # 1 + 2 + 4 + 8 s) ride out a short burst of them, where botocore's standard 3 may not.
    max_attempts: int = Field(5, ge=1)
    # "standard": exponential backoff with full jitter, so many workers retrying at once do not
    # come back in lockstep; "adaptive" adds client-side rate limiting (for heavy throttling).
    retry_mode: Literal["standard", "adaptive"] = "standard"

    def storage_options(self) -> dict[str, dict[str, Any]]:
        """fsspec options per protocol, handed to operators."""
        client_kwargs: dict[str, str] = {}
        endpoint = (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        if self.region:
            client_kwargs["region_name"] = self.region
        config_kwargs = {
            "connect_timeout": self.connect_timeout_s,
            "read_timeout": self.read_timeout_s,
            # botocore's own "max_attempts" key counts retries only; this one counts every try
            "retries": {"total_max_attempts": self.max_attempts, "mode": self.retry_mode},
        }
        s3 = {"anon": self.anon, "client_kwargs": client_kwargs, "config_kwargs": config_kwargs}
        return {"s3": s3, "s3a": s3}


class InputError(ValueError):
    """The job's INPUT argument names nothing that can be processed."""


@dataclass(frozen=True)
class InputRef:
    """One input recording: its canonical URI and size in bytes (None when unknown), and
    what the listing said of its current bytes (S3 ETag + size, or local size + mtime in ns,
    and when it was last modified), so an incremental run tells changed objects from
    unchanged ones without asking the store once more per object (None: it is missing)."""

    uri: str
    size_bytes: int | None
    fingerprint: str | None = None
    modified_at: datetime | None = None


def _fingerprint_of(info: dict[str, Any]) -> tuple[str, datetime | None]:
    """What identifies an object's bytes, from fsspec's ``info``/listing entry: S3's ETag +
    size, else (local files) size + mtime in ns; and when it was last modified (UTC)."""
    size = info.get("size")
    etag = info.get("ETag") or info.get("etag")
    if etag:
        modified = info.get("LastModified")
        fingerprint = f"etag={etag.strip(chr(34))};size={size}"
    else:
        mtime = float(info.get("mtime") or info.get("created") or 0.0)
        modified = datetime.fromtimestamp(mtime, UTC)
        fingerprint = f"size={size};mtime_ns={int(mtime * 1e9)}"
    if not isinstance(modified, datetime):
        modified = None
    elif modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    return fingerprint, modified


def _ref_from_listing(uri: str, info: dict[str, Any]) -> InputRef:
    fingerprint, modified = _fingerprint_of(info)
    return InputRef(uri, info.get("size"), fingerprint, modified)


def _canonical(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A URI that names the object the same way in every run (the clip id hashes it)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return str(Path(path).resolve())
    return f"{protocol}://{path}"


def list_inputs(
    spec: str, config: StorageConfig, extensions: tuple[str, ...]
) -> list[InputRef]:
    """Expand the job's INPUT into recordings.

    ``spec`` is a local file, folder or glob, an ``s3://bucket/prefix`` (recursive), or a
    manifest (``.txt``/``.lst``: one URI per line, ``#`` comments; ``.csv``: a ``uri`` column).
    Folders and prefixes keep files with a video extension; manifest entries are kept as
    listed, so a wrong entry still gets its own status row.  Raises :class:`InputError` when
    nothing matches.
    """
    options = config.storage_options()
    fs, path = open_fs(spec, options)
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in _MANIFEST_SUFFIXES and fs.isfile(path):
        refs = [_ref_for(entry, options) for entry in _read_manifest(fs, path, suffix)]
        if not refs:
            raise InputError(f"manifest {spec!r} lists no URIs")
        return refs

    # s3fs keeps listings per process: a long-lived driver (a notebook, a scheduler running
    # nightly jobs in one process) must see the bucket as it is now.
    fs.invalidate_cache()
    if any(ch in path for ch in _GLOB_CHARS):
        candidates = fs.glob(path, detail=True)
    elif fs.isdir(path):
        candidates = fs.find(path, detail=True)
    elif fs.isfile(path):
        candidates = {path: fs.info(path)}
    else:
        raise InputError(f"input {spec!r} does not exist or cannot be listed")

    refs, skipped = [], 0
    for name, info in sorted(candidates.items()):
        if info.get("type") == "directory":
            continue
        if PurePosixPath(name).suffix.lower() not in extensions:
            skipped += 1
            continue
        refs.append(_ref_from_listing(_canonical(fs, name), info))
    if skipped:
        logger.info("ignored %d file(s) without a video extension %s", skipped, extensions)
    if not refs:
        raise InputError(f"no recordings with extensions {extensions} under {spec!r}")
    return refs


def _read_manifest(fs: fsspec.AbstractFileSystem, path: str, suffix: str) -> list[str]:
    with fs.open(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "uri" not in reader.fieldnames:
            raise InputError(f"manifest {path!r} needs a 'uri' column, has {reader.fieldnames}")
        return [row["uri"].strip() for row in reader if row["uri"].strip()]
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _ref_for(entry: str, options: dict[str, dict[str, Any]]) -> InputRef:
    fs, path = open_fs(entry, options)
    fs.invalidate_cache(path)
    # A listed object that is missing is that clip's problem (read_error), not the job's.
    try:
        info = fs.info(path)
    except OSError:
        return InputRef(_canonical(fs, path), None)
    return _ref_from_listing(_canonical(fs, path), info)
