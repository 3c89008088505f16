"""Staging: give every input a local, seekable file for the decoders."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any

from operators import schema as S
from operators.io.files import StorageOptions, download, is_remote
from operators.resources import StageResources
from operators.step import Grain, Step

logger = logging.getLogger(__name__)


def staged_path(cache_dir: str, clip_id: str, uri: str) -> Path:
    """Where a remote input is staged on a node: named by clip id, so retries reuse it."""
    return Path(cache_dir) / f"{clip_id}{PurePosixPath(uri).suffix.lower()}"


class StageInput(Step):
    """Give each input row a ``LOCAL_PATH``: local inputs are used in place; remote ones
    (``s3://…``) are downloaded into ``cache_dir`` on this node (the decoder deletes them
    when it is done).

    Reads ``CLIP_ID``, ``URI``; writes ``LOCAL_PATH`` ("" when not staged), ``SIZE_BYTES``,
    and ``STATUS``/``ERROR`` (``read_error``, with the reason) when storage cannot deliver
    the object.  Network-bound; its resources are the decoder's (``resources.decode``), so
    Ray fuses stage, probe and decode into one task per clip.
    """

    name = "stage"
    grain = Grain.ROW
    reads = (S.CLIP_ID, S.URI, S.STATUS, S.ERROR)
    writes = (S.LOCAL_PATH, S.SIZE_BYTES, S.STATUS, S.ERROR)

    def __init__(self, storage_options: StorageOptions, cache_dir: str,
                 resources: StageResources | None = None):
        super().__init__(resources)
        self.storage_options = storage_options
        self.cache_dir = cache_dir

    def process(self, row: dict[str, Any]) -> dict[str, Any]:
        uri = row[S.URI]
        row[S.LOCAL_PATH] = ""
        try:
            if is_remote(uri):
                local = staged_path(self.cache_dir, row[S.CLIP_ID], uri)
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
