"""Helpers for the nightly job's tests: a bucket of fixture recordings on the moto server."""

from __future__ import annotations

import uuid

import boto3
import pytest


@pytest.fixture
def bucket(s3_endpoint):
    """A fresh bucket on the test S3 server; returns (name, boto3 client)."""
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return name, client
