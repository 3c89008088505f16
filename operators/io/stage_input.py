"""Staging: give every input a local, seekable file for the decoders."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from operators import schema as S
from operators.io.files import StorageOptions, download, is_remote
from operators.resources import StageResources
from operators.step import Grain, Step

logger = logging.getLogger(__name__)

STAGING_DIR_ENV = "EMORAY_STAGING_DIR"
"""A node's own staging folder, set in its environment (a Ray node's workers inherit it)."""


def node_staging_dir(configured: str | None) -> str:
    """Where this node stages remote inputs: ``configured`` when the job gives one (the same
    path on every node), else the node's own: ``$EMORAY_STAGING_DIR`` when the node sets
    it, else ``emoray-staging`` in its temp folder.  Called on the worker, so every node of
    a cluster resolves its own folder (its disk, its mount) rather than the driver's."""
    if configured:
        return configured
    return os.environ.get(STAGING_DIR_ENV) or str(Path(tempfile.gettempdir()) /
                                                 "emoray-staging")


def staged_path(cache_dir: str, clip_id: str, uri: str) -> Path:
    """Where a remote input is staged on a node: named by clip id, so retries reuse it."""
    return Path(cache_dir) / f"{clip_id}{PurePosixPath(uri).suffix.lower()}"


class StageInput(Step):
    """Give each input row a ``LOCAL_PATH``: local inputs are used in place; remote ones
    (``s3://…``) are downloaded into ``cache_dir`` on this node, or when it is None into the
    node's own folder (:func:`node_staging_dir`); the decoder deletes them when it is done.

    Reads ``CLIP_ID``, ``URI``; writes ``LOCAL_PATH`` ("" when not staged), ``SIZE_BYTES``,
    and ``STATUS``/``ERROR`` (``read_error``, with the reason) when storage cannot deliver
    the object.  Network-bound; its resources are the decoder's (``resources.decode``), so
    Ray fuses stage, probe and decode into one task per clip.
    """

    name = "stage"
    grain = Grain.ROW
    reads = (S.CLIP_ID, S.URI, S.STATUS, S.ERROR)
    writes = (S.LOCAL_PATH, S.SIZE_BYTES, S.STATUS, S.ERROR)

    def __init__(self, storage_options: StorageOptions, cache_dir: str | None,
                 resources: StageResources | None = None):
        super().__init__(resources)
        self.storage_options = storage_options
        self.cache_dir = cache_dir

    def process(self, row: dict[str, Any]) -> dict[str, Any]:
        uri = row[S.URI]
        row[S.LOCAL_PATH] = ""
        try:
            if is_remote(uri):
                local = staged_path(node_staging_dir(self.cache_dir), row[S.CLIP_ID],
                                    uri)
                if not local.exists():
                    download(uri, self.storage_options, local)
            else:
                local = Path(uri)
                if not local.is_file():
                    raise FileNotFoundError(uri)
            row[S.LOCAL_PATH] = str(local)
            row[S.SIZE_BYTES] = local.stat().st_size
        # Say which: S3 answers a denied HEAD with a bare "Forbidden", a missing one with the
        # path alone, and neither reads as a reason.
        except FileNotFoundError as exc:
            row[S.STATUS] = S.Status.READ_ERROR.value
            row[S.ERROR] = f"cannot read input: not found ({exc})"
        except PermissionError as exc:
            row[S.STATUS] = S.Status.READ_ERROR.value
            row[S.ERROR] = f"cannot read input: access denied ({exc})"
        except OSError as exc:  # transport errors after s3fs's own retries
            row[S.STATUS] = S.Status.READ_ERROR.value
            row[S.ERROR] = f"storage error reading input: {type(exc).__name__}: {exc}"
        if row[S.STATUS]:
            logger.warning("%s: %s", uri, row[S.ERROR])
        return row
