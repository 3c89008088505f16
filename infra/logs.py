"""Logging set-up for entry points (library code only ever calls ``logging.getLogger``)."""

from __future__ import annotations

import logging
import os
import re

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Libraries that log every request or every object at INFO/DEBUG; their detail drowns the
# job's own progress and includes request signatures.
_NOISY = ("botocore", "s3fs", "aiobotocore", "urllib3", "fsspec", "alembic", "mlflow.store")

# Request signatures and credentials as they appear in AWS request logs and pre-signed URLs.
_SECRETS = re.compile(
    r"(Signature=|X-Amz-Signature=|X-Amz-Credential=|X-Amz-Security-Token=|"
    r"aws_secret_access_key=|Credential=)[^\s,&\"']+", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Mask signatures and credentials in every record, whoever logs it at whatever level."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRETS.sub(r"\1<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once, from ``level`` or ``$EMORAY_LOG_LEVEL`` (default INFO),
    with secrets redacted from every handler's output."""
    resolved = level or os.environ.get("EMORAY_LOG_LEVEL", "INFO")
    logging.basicConfig(level=resolved, format=_FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
