"""Shared fixtures: generated media, a local Ray, a real S3 server and a real MLflow server,
and (from tests/fixtures/, registered below) the training corpora.

Everything runs on 127.0.0.1; nothing reaches the network.  Helpers that tests import live in
tests/fixtures/; a folder's conftest.py only defines fixtures for that folder.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.sample_media.build import make_sample_media
from tests.fixtures.mlflow_server import start_mlflow_server

# Fixture modules shared by several test folders (pytest's way to share fixtures beyond one
# conftest.py).
pytest_plugins = ["tests.fixtures.corpora"]

# Dummy credentials for the loopback S3 server.  Set before Ray starts so its workers inherit
# them (s3fs would otherwise probe for cloud instance credentials).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "emoray-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "emoray-test-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """The named fixture recordings (see pipelines/sample_media), generated once."""
    return make_sample_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ray_local(s3_endpoint) -> Iterator[None]:
    """A session-wide local Ray with 2 CPUs (started after the S3 env is in place)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real ``mlflow server`` process on 127.0.0.1 with a sqlite store."""
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow"), free_port())
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
