"""Logging set-up for entry points (library code only ever calls ``logging.getLogger``)."""

from __future__ import annotations

import logging
import os

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Libraries that log every request or every object at INFO; their detail drowns the job's own
# progress and can include full request URLs (signed URLs must never reach logs).
_NOISY = ("botocore", "s3fs", "aiobotocore", "urllib3", "fsspec", "alembic", "mlflow.store")


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once, from ``level`` or ``$EMORAY_LOG_LEVEL`` (default INFO)."""
    resolved = level or os.environ.get("EMORAY_LOG_LEVEL", "INFO")
    logging.basicConfig(level=resolved, format=_FORMAT)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
