"""Secrets never reach log output, even from a library logging at DEBUG."""

from __future__ import annotations

import io
import logging

from infra.logs import RedactSecrets


def test_signatures_and_credentials_are_redacted():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    log = logging.getLogger("test.redact")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("Authorization: AWS4-HMAC-SHA256 Credential=AKIA123/20261122/us-east-1, "
                  "SignedHeaders=host, Signature=%s", "deadbeefcafe")
        log.info("GET https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123&X-Amz-Expires=60")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "deadbeefcafe" not in text and "abc123" not in text and "AKIA123" not in text
    assert text.count("<redacted>") == 3
    assert "X-Amz-Expires=60" in text  # only the secret parts go
