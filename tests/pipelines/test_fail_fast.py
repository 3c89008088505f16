"""Fail fast and say why: the ``emoray`` commands with one thing wrong each, against real
things that are wrong (a port where nothing listens, the moto S3 server with a missing
bucket or refusing every credential, a file given as ``--out``, an ``mlflow server`` that
was started and stopped, a Ray address with no cluster, a store that goes away mid-run).

Each asserts the exit code, the one line that says why (and no traceback unless
``--debug``), and the time: the preflight runs before Ray starts, so a command that fails
it ends within ``BOUND_S`` (its probes are bounded by ``preflight.timeout_s``, 10 s; a
refused connection costs a second or two).  The commands run in-process through
``pipelines.cli.main`` (no interpreter start-up in the time), except the ones about what
a user's terminal shows and the store that goes away mid-run, which run as processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import boto3
import pandas as pd
import pytest
import ray

from infra.preflight import ExitCode, check_tracking, find_problems
from infra.storage import InputRef, StorageConfig
from infra.tracking import TrackingConfig
from operators import schema as S
from pipelines.cli import main
from pipelines.emotion_timeline.build import ResolvedModels, make_writer
from pipelines.emotion_timeline.config import load_config
from pipelines.nightly.config import load_nightly_config
from pipelines.nightly.job import run as run_nightly
from pipelines.nightly.state import read_state
from pipelines.runner import OutputLostError, _record_failures, output_watch
from tests.fixtures.faulty_s3_proxy import FaultRule, FaultyS3Proxy
from tests.fixtures.mlflow_server import start_mlflow_server

BOUND_S = 15.0  # in-process: the preflight's 10 s timeout at most, plus a loaded machine
PROCESS_BOUND_S = 60.0  # as a process: Python, torch, Ray and MLflow imports on top
NO_TRACKING = ["--set", "tracking.enabled=false"]


def _port_with_nothing_listening() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dead_port() -> int:
    return _port_with_nothing_listening()


@pytest.fixture
def recordings(tmp_path) -> Path:
    """A folder with one (empty) recording: enough for every check before Ray starts."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"")
    return folder


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default ./mlruns store lands here, not in the checkout


def _fails_fast(argv: list[str], caplog, code: ExitCode, message: str) -> None:
    """``emoray ARGV`` ends with ``code`` within BOUND_S, logging exactly ``message`` as its
    one error line, without a traceback, and without starting Ray."""
    caplog.clear()
    started = time.monotonic()
    # A spy, not a fake: Ray must not be started or joined (the suite's own local Ray may
    # already run in this process, so ray.is_initialized() cannot tell).
    with caplog.at_level(logging.INFO), mock.patch.object(ray, "init", wraps=ray.init) as init:
        returned = main(argv)
    elapsed = time.monotonic() - started
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert returned == code, [r.getMessage() for r in errors]
    assert [r.getMessage() for r in errors] == [message]
    assert errors[0].exc_info is None
    assert elapsed < BOUND_S, f"took {elapsed:.1f} s"
    init.assert_not_called()


# --- the table of issue 22, one row each ---------------------------------------------------
def test_input_path_does_not_exist(tmp_path, caplog):
    missing = str(tmp_path / "no" / "such" / "folder")
    _fails_fast(["run", missing, "--out", "out", *NO_TRACKING], caplog, ExitCode.BAD_INPUT,
                f"input {missing!r} does not exist or cannot be listed")


def test_s3_input_with_the_endpoint_unreachable(dead_port, caplog):
    _fails_fast(["run", "s3://rec/in", "--out", "out", *NO_TRACKING,
                 "--set", f"storage.endpoint_url=http://127.0.0.1:{dead_port}"],
                caplog, ExitCode.STORAGE, "cannot list input 's3://rec/in': could not connect "
                                          f"to http://127.0.0.1:{dead_port} (connection refused)")


def test_s3_output_with_the_endpoint_unreachable(recordings, dead_port, caplog):
    _fails_fast(["run", str(recordings), "--out", "s3://rec/out", *NO_TRACKING,
                 "--set", f"storage.endpoint_url=http://127.0.0.1:{dead_port}"],
                caplog, ExitCode.STORAGE, "cannot write to s3://rec/out: could not connect to "
                                          f"http://127.0.0.1:{dead_port} (connection refused)")


@pytest.mark.parametrize("command", ["run", "nightly"])
def test_out_names_an_existing_file(recordings, tmp_path, caplog, command):
    target = tmp_path / "timelines.parquet"
    target.write_bytes(b"PAR1")
    given = ["--input", str(recordings)] if command == "nightly" else [str(recordings)]
    _fails_fast([command, *given, "--out", str(target), *NO_TRACKING], caplog, ExitCode.OUTPUT,
                f"cannot write to {target}: a file is in the way (the path or a folder above "
                "it is a file)")
    assert target.read_bytes() == b"PAR1"


def test_s3_output_bucket_missing_and_credentials_refused(recordings, s3_endpoint, caplog):
    endpoint = ["--set", f"storage.endpoint_url={s3_endpoint}"]
    _fails_fast(["run", str(recordings), "--out", "s3://emoray-missing-bucket/out", *NO_TRACKING,
                 *endpoint], caplog, ExitCode.OUTPUT, "cannot write to "
                "s3://emoray-missing-bucket/out: bucket 'emoray-missing-bucket' does not exist")
    bucket = f"fail-fast-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    # moto's own switch for its IAM check: with 0, every request must carry credentials of
    # one of its IAM users, and there are none.
    _moto_auth(s3_endpoint, "0")
    try:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            returned = main(["run", str(recordings), "--out", f"s3://{bucket}/out",
                             *NO_TRACKING, *endpoint])
    finally:
        _moto_auth(s3_endpoint, "inf")
    assert returned == ExitCode.STORAGE
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(
        f"cannot write to s3://{bucket}/out: {s3_endpoint} rejected the credentials "
        "(InvalidAccessKeyId: ")


def _moto_auth(endpoint: str, count: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(),
                                     method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def stopped_mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1, started (the job's preflight passes while it
    answers) and then stopped.  Yields its URL."""
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("stopped-mlflow"),
                                    _port_with_nothing_listening())
    try:
        assert find_problems([check_tracking(TrackingConfig(uri=url), 10)], 10) == []
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    yield url


@pytest.mark.integration
def test_tracking_server_that_is_down(recordings, stopped_mlflow_server, caplog):
    _fails_fast(["run", str(recordings), "--out", "out", "--tracking-uri", stopped_mlflow_server],
                caplog, ExitCode.TRACKING,
                f"cannot reach MLflow tracking at {stopped_mlflow_server}: connection refused; "
                "to run without tracking: --set tracking.enabled=false")


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_address_with_no_ray_cluster(recordings, dead_port, caplog, address):
    address = address.format(port=dead_port)
    _fails_fast(["run", str(recordings), "--out", "out", *NO_TRACKING, "--address", address],
                caplog, ExitCode.RAY, f"cannot reach the Ray cluster at {address}: connection "
                                      f"refused (nothing listens on 127.0.0.1:{dead_port})")


def test_submit_to_a_dashboard_that_is_down(dead_port, caplog):
    url = f"http://127.0.0.1:{dead_port}"
    _fails_fast(["submit", "--address", url, "--working-dir", "none", "--", "run", "x",
                 "--out", "y"], caplog, ExitCode.RAY,
                f"cannot reach the Ray dashboard at {url}: connection refused")


def test_train_with_checkpoints_where_a_file_is(tmp_path, caplog):
    for name in ("train.csv", "val.csv", "checkpoints"):
        (tmp_path / name).write_text("")
    config = tmp_path / "train.yaml"
    config.write_text("task: face\nstorage_path: checkpoints\ntracking: {enabled: false}\n"
                      "data:\n  train: {format: fer2013, uri: train.csv}\n"
                      "  val: {format: fer2013, uri: val.csv}\n")
    _fails_fast(["train", str(config)], caplog, ExitCode.OUTPUT,
                "cannot write to checkpoints: a file is in the way (the path or a folder above "
                "it is a file)")


def test_traceback_only_with_debug(recordings, dead_port, tmp_path):
    """What a terminal shows: one line naming the thing, the URI and the cause; the
    traceback only with --debug."""
    argv = [sys.executable, "-m", "pipelines.cli", "run", str(recordings), "--out",
            "s3://rec/out", *NO_TRACKING, "--set",
            f"storage.endpoint_url=http://127.0.0.1:{dead_port}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for debug in (False, True):
        started = time.monotonic()
        done = subprocess.run(argv + (["--debug"] if debug else []), capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=300)
        assert time.monotonic() - started < PROCESS_BOUND_S
        assert done.returncode == ExitCode.STORAGE, done.stderr
        errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and errors[0].endswith(
            f"cannot write to s3://rec/out: could not connect to http://127.0.0.1:{dead_port} "
            "(connection refused)")
        assert ("Traceback" in done.stderr) == debug


# --- what the driver records when rows are missing --------------------------------------------
def _writer(out: str):
    config = load_config(None, ["tracking.enabled=false"])
    return make_writer(config, out, "run-1", ResolvedModels("face")), config


def test_record_failures_on_an_empty_result(tmp_path):
    """An empty result (Ray Data gives one without columns) is no KeyError: the one input
    gets its `failed` row; several inputs all missing stay the infrastructure error."""
    writer, _ = _writer(str(tmp_path / "out"))
    refs = [InputRef(str(tmp_path / "a.mp4"), 10), InputRef(str(tmp_path / "b.mp4"), 10)]
    rows = _record_failures(refs[:1], pd.DataFrame(), writer, [])
    assert rows[S.STATUS].tolist() == [S.Status.FAILED.value]
    assert rows[S.URI].tolist() == [refs[0].uri]
    written = pd.read_parquet(tmp_path / "out" / "clips")
    assert written[S.STATUS].tolist() == [S.Status.FAILED.value]
    with pytest.raises(RuntimeError, match="every clip failed in the workers"):
        _record_failures(refs, pd.DataFrame(), writer, [])


def test_record_failures_when_the_output_is_gone(tmp_path):
    """A `failed` row that cannot be written because the output went away ends the run with
    the output's message (exit 4), not with the write's exception."""
    out = tmp_path / "out"
    writer, config = _writer(str(out))
    out.write_bytes(b"")  # the output folder is gone, a file in its place
    watch = output_watch(str(out), config)
    with pytest.raises(OutputLostError) as caught:
        _record_failures([InputRef(str(tmp_path / "a.mp4"), 10)], pd.DataFrame(), writer, [],
                         output_check=watch)
    assert caught.value.code == ExitCode.OUTPUT
    assert caught.value.lines == (
        f"cannot write to {out}: a file is in the way (the path or a folder above it is a "
        "file) — the output stopped being writable during the run; what was written before "
        "stays valid: run the same command again to complete the rest",)


# --- the store goes away during the run -------------------------------------------------------
CASES = {"zero_bytes": "empty_file", "not_a_video": "not_video", "corrupt": "decode_error"}
_ALL_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})


class GoingAway(FaultyS3Proxy):
    """The store in front of which the job writes: it lets the first clip's state record
    through, then answers nothing more (every later request hangs) until :meth:`stop`, which
    the test calls once that record is stored: the store is gone."""

    def __init__(self, upstream: str):
        super().__init__(upstream)
        self.tripped = threading.Event()

    def _observe(self, method: str, key: str, authorization: str, query: str
                 ) -> list[FaultRule]:
        acting = super()._observe(method, key, authorization, query)
        if method == "PUT" and "/_state/processed/" in key and not self.tripped.is_set():
            self.tripped.set()  # this request still goes through: the rule acts on later ones
            self.add_rule(FaultRule(".*", methods=_ALL_METHODS, stall_s=600))
        return acting


@pytest.mark.integration
def test_output_store_gone_mid_run_then_a_rerun_does_exactly_the_rest(media, ray_local,
                                                                       s3_endpoint, tmp_path):
    """A nightly driver (a process joined to the test's Ray) writes to S3 (moto) through a
    proxy, which stops once the first clip is recorded: the store is gone mid-run.  The
    driver ends with exit 4 and the output's message; what it wrote is whole; a second run
    (the store back) processes exactly the clips without a record."""
    bucket = f"gone-{time.monotonic_ns()}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in CASES:
        shutil.copy(media[case], inputs)
    ids = sorted(S.clip_id_for(str((inputs / f"{case}.mp4").resolve())) for case in CASES)
    out = f"s3://{bucket}/out"
    proxy = GoingAway(s3_endpoint).start()
    endpoint = proxy.url
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "nightly", "--input", str(inputs), "--out", out,
         "--address", ray.get_runtime_context().gcs_address, *NO_TRACKING,
         "--set", f"storage.endpoint_url={endpoint}", "--set", "storage.read_timeout_s=2",
         "--set", "storage.max_attempts=2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            if proxy.tripped.is_set() and s3.list_objects_v2(
                    Bucket=bucket, Prefix="out/_state/processed/")["KeyCount"]:
                break
            time.sleep(0.05)
        running = driver.poll() is None
        proxy.stop()
        gone = time.monotonic()
        output, _ = driver.communicate(timeout=300)
    finally:
        proxy.stop()
        if driver.poll() is None:
            driver.kill()
    assert running, f"the driver ended before the store went away:\n{output}"
    ended_after = time.monotonic() - gone
    assert driver.returncode == ExitCode.OUTPUT, output
    said = [line.split(" ERROR emoray.runner: ", 1)[1] for line in output.splitlines()
            if " ERROR emoray.runner: " in line]
    assert said == [
        f"cannot write to {out}: could not connect to {endpoint} (connection refused) — the "
        "output stopped being writable during the run; what was written before stays valid: "
        "run the same command again to complete the rest"], output
    print(f"the driver ended {ended_after:.1f} s after the store went away")
    assert ended_after < PROCESS_BOUND_S, f"ended {ended_after:.0f} s after the store went away"

    options = StorageConfig(endpoint_url=s3_endpoint).storage_options()
    recorded = read_state(out, options)[S.CLIP_ID].tolist()
    assert len(recorded) == 1
    # What was written is whole (a PUT is atomic): the recorded clip's row, and maybe rows
    # of clips written but not yet recorded, which the next run processes again.
    written = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/clips/")[
        "Contents"]}
    assert f"out/clips/{recorded[0]}.parquet" in written
    for key in written:
        row = pd.read_parquet(f"s3://{bucket}/{key}", storage_options=options["s3"])
        assert len(row) == 1 and row[S.STATUS].iloc[0] in CASES.values()

    again = run_nightly(str(inputs), out, load_nightly_config(
        None, ["tracking.enabled=false", f"storage.endpoint_url={s3_endpoint}"]))
    assert sorted(again.clips[S.CLIP_ID]) == sorted(set(ids) - set(recorded))
    assert sorted(read_state(out, options)[S.CLIP_ID]) == ids
    clips = pd.read_parquet(f"{out}/clips", storage_options=options["s3"])
    assert sorted(clips[S.CLIP_ID]) == ids
    assert sorted(clips[S.STATUS]) == sorted(CASES.values())
