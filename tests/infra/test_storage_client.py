"""The storage config's timeouts and retry policy reach the s3fs/botocore clients that operators
build from ``storage_options()``, for reads (staging) and for Parquet writes, and behave as
``StorageConfig``'s docstring says: checked without Ray, against the moto server of
``tests/conftest.py`` behind the fault proxy (``tests/fixtures/faulty_s3_proxy.py``).

Timeouts here are a fraction of a second, so a stalled try costs little; the waits between tries
(botocore's jittered backoff, s3fs's fixed 0.1 × 1.7ⁱ s) are real.  A request that stalls on
every try, through the whole job, is in ``tests/pipelines/test_storage_faults.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.storage import StorageConfig
from operators.io.files import download, open_fs, write_parquet_atomic
from pipelines.emotion_timeline.config import load_config
from tests.fixtures.faulty_s3_proxy import FaultRule, FaultyS3Proxy

pytestmark = pytest.mark.integration

BUCKET = "storage-client"
BODY = bytes(range(256)) * 1024  # 256 KiB: more than a mid-body stall lets through
TIMEOUT_S = 0.25


@pytest.fixture(scope="module")
def proxy(s3_endpoint) -> Iterator[FaultyS3Proxy]:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for name in ("once.bin", "midway.bin", "always.bin", "errors.bin"):
        s3.put_object(Bucket=BUCKET, Key=name, Body=BODY)
    with FaultyS3Proxy(s3_endpoint) as running:
        yield running


def _options(proxy: FaultyS3Proxy, **fields) -> dict:
    return StorageConfig(endpoint_url=proxy.url, read_timeout_s=TIMEOUT_S, **fields
                         ).storage_options()


def test_defaults_and_job_overrides_reach_the_client():
    options = StorageConfig().storage_options()
    assert options["s3"]["config_kwargs"] == {
        "connect_timeout": 10.0, "read_timeout": 60.0,
        "retries": {"total_max_attempts": 5, "mode": "standard"}}
    assert options["s3a"] == options["s3"]

    config = load_config(None, ["storage.endpoint_url=http://127.0.0.1:9",
                                "storage.read_timeout_s=2", "storage.connect_timeout_s=3",
                                "storage.max_attempts=2", "storage.retry_mode=adaptive"])
    fs, _ = open_fs("s3://bucket/key.mp4", config.storage.storage_options())
    client = fs.s3  # built here, nothing is sent
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (3, 2)
    assert client.meta.config.retries == {"total_max_attempts": 2, "mode": "adaptive"}
    timeout = client._endpoint.http_session._timeout  # what aiohttp enforces
    assert (timeout.sock_connect, timeout.sock_read) == (3, 2)


@pytest.mark.parametrize("bad", ["storage.max_attempts=0", "storage.read_timeout_s=0",
                                 "storage.retry_mode=legacy", "storage.retries=3"])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError):
        load_config(None, [bad])


def test_stalled_first_read_and_write_are_retried_after_the_read_timeout(proxy, tmp_path):
    options = _options(proxy)
    proxy.add_rule(FaultRule(rf"^{BUCKET}/once\.bin$", stall_s=30, times=1))
    started = time.perf_counter()
    download(f"s3://{BUCKET}/once.bin", options, tmp_path / "once.bin")
    assert time.perf_counter() - started >= TIMEOUT_S  # it waited out one timeout
    assert (tmp_path / "once.bin").read_bytes() == BODY
    assert proxy.count("GET", f"{BUCKET}/once.bin") == 2  # stalled, then botocore's retry

    written = f"{BUCKET}/written/once.parquet"
    proxy.add_rule(FaultRule(rf"^{written}$", methods={"PUT"}, stall_s=30, times=1))
    table = pa.table({"x": pa.array(range(100), pa.int64())})
    write_parquet_atomic(table, f"s3://{written}", options)
    assert proxy.count("PUT", written) == 2
    fs, path = open_fs(f"s3://{written}", options)
    assert pq.read_table(path, filesystem=fs).equals(table)


def test_server_errors_are_tried_max_attempts_times(proxy, tmp_path):
    """s3fs does not repeat a 500: the attempts are botocore's, as configured."""
    proxy.add_rule(FaultRule(rf"^{BUCKET}/errors\.bin$", status=500, code="InternalError"))
    with pytest.raises(OSError, match="internal error"):
        download(f"s3://{BUCKET}/errors.bin", _options(proxy, max_attempts=3),
                 tmp_path / "errors.bin")
    assert proxy.count("GET", f"{BUCKET}/errors.bin") == 3
    assert not (tmp_path / "errors.bin").exists()


def test_a_body_that_stalls_midway_is_read_again(proxy, tmp_path):
    """Headers and the first KiB arrive, then nothing: the read times out and s3fs's read
    loop fetches the range again (botocore's call had already returned)."""
    proxy.add_rule(FaultRule(rf"^{BUCKET}/midway\.bin$", stall_s=30, stall_after_bytes=1024,
                             times=1))
    download(f"s3://{BUCKET}/midway.bin", _options(proxy), tmp_path / "midway.bin")
    assert (tmp_path / "midway.bin").read_bytes() == BODY
    assert proxy.count("GET", f"{BUCKET}/midway.bin") == 2


def test_a_body_that_always_stalls_is_a_timeout_error(proxy, tmp_path):
    """Every try stalls after the headers: a TimeoutError (an OSError, so staging records a
    read_error), not the IndexError s3fs's ranged read turns fsspec's timeout into."""
    proxy.add_rule(FaultRule(rf"^{BUCKET}/always\.bin$", stall_s=30, stall_after_bytes=1024))
    try:
        with pytest.raises(OSError, match=r"(?i)timeout|timed out"):
            download(f"s3://{BUCKET}/always.bin", _options(proxy), tmp_path / "always.bin")
    finally:
        # s3fs's read loop: 5 tries, each after the headers (botocore is not asked again)
        assert proxy.count("GET", f"{BUCKET}/always.bin") == 5
        assert list(tmp_path.iterdir()) == []  # nothing partial left behind
