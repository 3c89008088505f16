"""The preflight's probes against real things that are wrong: a port where nothing listens,
a port that accepts connections and never answers, the moto S3 server with a missing bucket
and with its IAM check switched on (every credential refused), a file where a folder
should be.  No Ray is started: the preflight runs before ``ray.init``.

Each check must come back within its bound: ``timeout_s`` (5 s here: room for the first S3
client of the process to load botocore's service models on a loaded machine) for a probe
that gets no answer; a refused connection well within it.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

import boto3
import pytest

from infra.preflight import (
    Check,
    ExitCode,
    PreflightConfig,
    PreflightError,
    Problem,
    check_dashboard,
    check_input,
    check_job,
    check_output,
    check_ray,
    check_tracking,
    find_problems,
)
from infra.storage import StorageConfig
from infra.tracking import TrackingConfig

TIMEOUT_S = 5.0


def _only(check: Check) -> Problem | None:
    """The check's problem, asserting it came back within its bound."""
    started = time.monotonic()
    problems = find_problems([check], TIMEOUT_S)
    assert time.monotonic() - started < TIMEOUT_S + 0.5
    return problems[0] if problems else None


@pytest.fixture
def dead_port() -> int:
    """A loopback port with nothing listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel's backlog) and never
    answers: a hung server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture
def bucket(s3_endpoint) -> str:
    name = f"preflight-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def _moto_auth(endpoint: str, count: str) -> None:
    """moto's own switch for its IAM check (``/moto-api/reset-auth``): with 0, every request
    is authenticated against moto's IAM users, of which there are none."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(),
                                     method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


# --- output ----------------------------------------------------------------------------------
def test_a_file_where_the_output_folder_should_be(tmp_path):
    target = tmp_path / "results.parquet"
    target.write_bytes(b"not a folder")
    problem = _only(check_output(str(target), StorageConfig(), TIMEOUT_S))
    assert problem.code == ExitCode.OUTPUT
    assert problem.message == f"cannot write to {target}: a file is in the way (the path or " \
                              "a folder above it is a file)"
    nested = _only(check_output(str(target / "out"), StorageConfig(), TIMEOUT_S))
    assert nested.code == ExitCode.OUTPUT and "a file is in the way" in nested.message


def test_a_writable_output_is_left_as_it_was(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    assert _only(check_output(str(out), StorageConfig(), TIMEOUT_S)) is None
    assert list(tmp_path.iterdir()) == []  # the folders made for the test are gone again
    existing = tmp_path / "existing"
    existing.mkdir()
    assert _only(check_output(str(existing), StorageConfig(), TIMEOUT_S)) is None
    assert list(existing.iterdir()) == []


def test_s3_endpoint_with_nothing_listening(dead_port):
    storage = StorageConfig(endpoint_url=f"http://127.0.0.1:{dead_port}")
    output = _only(check_output("s3://rec/out", storage, TIMEOUT_S))
    inputs = _only(check_input("s3://rec/in/", storage, TIMEOUT_S))
    cause = f"could not connect to http://127.0.0.1:{dead_port} (connection refused)"
    assert output == Problem(ExitCode.STORAGE, f"cannot write to s3://rec/out: {cause}")
    assert inputs == Problem(ExitCode.STORAGE, f"cannot list input 's3://rec/in/': {cause}")


def test_s3_missing_bucket_and_a_writable_one(s3_endpoint, bucket):
    storage = StorageConfig(endpoint_url=s3_endpoint)
    output = _only(check_output("s3://emoray-no-such-bucket/out", storage, TIMEOUT_S))
    assert output == Problem(ExitCode.OUTPUT, "cannot write to s3://emoray-no-such-bucket/out: "
                                              "bucket 'emoray-no-such-bucket' does not exist")
    inputs = _only(check_input("s3://emoray-no-such-bucket/in", storage, TIMEOUT_S))
    assert inputs == Problem(ExitCode.BAD_INPUT, "cannot list input "
                             "'s3://emoray-no-such-bucket/in': bucket 'emoray-no-such-bucket' "
                             "does not exist")
    # An existing bucket: writable, the marker is deleted again, an empty prefix is no input.
    assert _only(check_output(f"s3://{bucket}/out", storage, TIMEOUT_S)) is None
    listing = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)
    assert listing["KeyCount"] == 0
    missing = _only(check_input(f"s3://{bucket}/in/*.mp4", storage, TIMEOUT_S))
    assert missing == Problem(ExitCode.BAD_INPUT,
                              f"input 's3://{bucket}/in/*.mp4' does not exist or cannot be listed")
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=bucket, Key="in/a.mp4",
                                                            Body=b"x")
    assert _only(check_input(f"s3://{bucket}/in/*.mp4", storage, TIMEOUT_S)) is None


def test_s3_wrong_credentials(s3_endpoint, bucket):
    storage = StorageConfig(endpoint_url=s3_endpoint)
    _moto_auth(s3_endpoint, "0")
    try:
        output = _only(check_output(f"s3://{bucket}/out", storage, TIMEOUT_S))
        inputs = _only(check_input(f"s3://{bucket}/in", storage, TIMEOUT_S))
    finally:
        _moto_auth(s3_endpoint, "inf")
    rejected = f"{s3_endpoint} rejected the credentials (InvalidAccessKeyId: "
    assert output.code == ExitCode.STORAGE and inputs.code == ExitCode.STORAGE
    assert output.message.startswith(f"cannot write to s3://{bucket}/out: {rejected}")
    assert inputs.message.startswith(f"cannot list input 's3://{bucket}/in': {rejected}")


def test_a_silent_store_costs_the_timeout_not_more(silent_port):
    storage = StorageConfig(endpoint_url=f"http://127.0.0.1:{silent_port}")
    output = _only(check_output("s3://rec/out", storage, TIMEOUT_S))
    assert output == Problem(ExitCode.STORAGE, "cannot write to s3://rec/out: no answer within "
                                               f"{TIMEOUT_S:g} s")


# --- input -----------------------------------------------------------------------------------
def test_local_inputs(tmp_path):
    (tmp_path / "rec").mkdir()
    assert _only(check_input(str(tmp_path / "rec"), StorageConfig(), TIMEOUT_S)) is None
    assert _only(check_input(str(tmp_path / "rec" / "*.mp4"), StorageConfig(), TIMEOUT_S)) is None
    missing = str(tmp_path / "nope" / "*.mp4")
    assert _only(check_input(missing, StorageConfig(), TIMEOUT_S)) == Problem(
        ExitCode.BAD_INPUT, f"input {missing!r} does not exist or cannot be listed")


# --- tracking --------------------------------------------------------------------------------
def test_tracking_server_not_answering(dead_port, silent_port):
    down = _only(check_tracking(TrackingConfig(uri=f"http://127.0.0.1:{dead_port}"), TIMEOUT_S))
    assert down == Problem(ExitCode.TRACKING, "cannot reach MLflow tracking at "
                           f"http://127.0.0.1:{dead_port}: connection refused; to run without "
                           "tracking: --set tracking.enabled=false")
    hung = _only(check_tracking(TrackingConfig(uri=f"http://127.0.0.1:{silent_port}"),
                                TIMEOUT_S))
    assert hung == Problem(ExitCode.TRACKING, "cannot reach MLflow tracking at "
                           f"http://127.0.0.1:{silent_port}: no answer within {TIMEOUT_S:g} s; "
                           "to run without tracking: --set tracking.enabled=false")


def test_tracking_store_folders(tmp_path):
    blocker = tmp_path / "mlruns"
    blocker.write_bytes(b"")
    uri = f"sqlite:///{blocker}/mlflow.db"
    problem = _only(check_tracking(TrackingConfig(uri=uri), TIMEOUT_S))
    assert problem == Problem(ExitCode.TRACKING, f"cannot write to the MLflow store {uri}: a file "
                              "is in the way (the path or a folder above it is a file); to run "
                              "without tracking: --set tracking.enabled=false")
    fine = f"sqlite:///{tmp_path}/store/mlflow.db"
    assert _only(check_tracking(TrackingConfig(uri=fine), TIMEOUT_S)) is None
    assert not (tmp_path / "store").exists()


# --- Ray -------------------------------------------------------------------------------------
def test_ray_address_with_nothing_listening(dead_port, monkeypatch):
    for address in (f"127.0.0.1:{dead_port}", f"ray://127.0.0.1:{dead_port}"):
        assert _only(check_ray(address, TIMEOUT_S)) == Problem(
            ExitCode.RAY, f"cannot reach the Ray cluster at {address}: connection refused "
                          f"(nothing listens on 127.0.0.1:{dead_port})")
    # $RAY_ADDRESS (set by `ray job submit`) is the address when none is given.
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{dead_port}")
    assert _only(check_ray(None, TIMEOUT_S)).code == ExitCode.RAY
    monkeypatch.delenv("RAY_ADDRESS")
    assert check_ray(None, TIMEOUT_S) is None  # a local Ray: nothing to reach
    assert check_ray("auto", TIMEOUT_S) is None


def test_dashboard_with_nothing_listening(dead_port):
    url = f"http://127.0.0.1:{dead_port}"
    assert _only(check_dashboard(url, TIMEOUT_S)) == Problem(
        ExitCode.RAY, f"cannot reach the Ray dashboard at {url}: connection refused")


# --- the whole preflight ---------------------------------------------------------------------
def test_every_problem_is_reported_with_the_first_ones_code(tmp_path, dead_port):
    blocker = tmp_path / "out"
    blocker.write_bytes(b"")
    started = time.monotonic()
    with pytest.raises(PreflightError) as caught:
        check_job(PreflightConfig(timeout_s=TIMEOUT_S), StorageConfig(),
                  inputs=[str(tmp_path / "missing")], output=str(blocker),
                  tracking=TrackingConfig(uri=f"http://127.0.0.1:{dead_port}"),
                  address=f"127.0.0.1:{dead_port}")
    assert time.monotonic() - started < TIMEOUT_S + 0.5  # the checks ran at once
    assert caught.value.code == ExitCode.BAD_INPUT
    assert [p.code for p in caught.value.problems] == [
        ExitCode.BAD_INPUT, ExitCode.OUTPUT, ExitCode.TRACKING, ExitCode.RAY]
    assert all("\n" not in line for line in caught.value.lines)


def test_a_disabled_preflight_checks_nothing(tmp_path):
    check_job(PreflightConfig(enabled=False), StorageConfig(),
              inputs=[str(tmp_path / "missing")], output=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
