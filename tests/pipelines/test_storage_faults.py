"""Storage faults: the timeline job over a real S3 server (moto) reached through a
fault-injecting HTTP proxy on 127.0.0.1 (``tests/fixtures/faulty_s3_proxy.py``).

One run of the job, with ``storage.read_timeout_s`` set to 2 s, covers every case but one,
each input named for its fault:

* ``in/transient.mp4``: its first two GETs answer ``503 SlowDown`` → retried, ``ok``;
* ``in/slow.mp4``: every request held 1 s (under the read timeout) → waited out, ``ok``;
* ``in/stalled_once.mp4``: its first GET never answered → timed out, retried, ``ok``;
* ``in/denied.mp4``: ``403 AccessDenied`` on every HEAD and GET → ``read_error``, "access denied";
* ``in/missing.mp4``: listed in the manifest, never uploaded → ``read_error``, "not found";
* ``in/../../escape.mp4`` and ``/abs/escape.mp4`` (S3 keys may hold dot segments and a leading
  '/'), and a local ``..escape.mp4`` listed as ``sub/../..escape.mp4``: outputs stay under
  ``OUT/clips`` and ``OUT/timelines``, named by clip id;
* the first PUT of a clip row answers ``500 InternalError`` → retried, every row written;
* the first PUT of a timeline is never answered → timed out, retried, every timeline written.

The case left out, ``in/hung.mp4`` whose every GET goes unanswered, costs 25 × max_attempts
tries of a read timeout each (``infra.storage.StorageConfig``): a second, small run gives it
one attempt of 0.5 s, with one clip beside it → ``read_error`` (a timeout), the other ``ok``.

While it runs, a reader lists and parses every object under ``out/``; the driver's logging is
captured at DEBUG (with the entry point's logger levels) and, afterwards, Ray's log files are
searched for the credentials and the request signatures the proxy saw.  Writing local outputs
atomically (temp file + rename) is checked on the writer itself, without the job.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from infra.logs import setup_logging
from operators import schema as S
from operators.io.files import write_parquet_atomic
from operators.schema import clip_id_for
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run
from tests.fixtures.faulty_s3_proxy import FaultRule, FaultyS3Proxy

pytestmark = pytest.mark.integration

BUCKET = "storage-faults"
READ_TIMEOUT_S = 2.0
SLOW_S = 1.0  # well under READ_TIMEOUT_S, even on a loaded machine
STALL_S = 60.0  # far beyond any read timeout here: the client always gives up first
# Distinctive credentials for the driver during the run (the server accepts any).  Ray's
# workers keep the ones they inherited when Ray started (conftest's): both must stay unlogged.
DRIVER_KEY_ID = "AKIAEMORAYFAULTS0001"
DRIVER_SECRET = "emoray-secret-XYZ-0f3c9a7d2b1e4c6a"
# S3 inputs: key → fixture case.  Cases that decode cost real time, so only three do.
S3_INPUTS = {
    "in/transient.mp4": "face_speech",
    "in/slow.mp4": "face_silence",
    "in/stalled_once.mp4": "face_silence",
    "in/../../escape.mp4": "no_face",
    "/abs/escape.mp4": "zero_bytes",
    "in/denied.mp4": "face_speech",  # never delivered
}
MISSING_KEY = "in/missing.mp4"
LOCAL_NAME = "..escape.mp4"  # a local file whose name holds '..' (fixture case not_a_video)
EXPECTED_STATUS = {
    "in/transient.mp4": "ok",
    "in/slow.mp4": "ok",
    "in/stalled_once.mp4": "ok",
    "in/../../escape.mp4": "no_face",
    "/abs/escape.mp4": "empty_file",
    "in/denied.mp4": "read_error",
    MISSING_KEY: "read_error",
    LOCAL_NAME: "not_video",
}
_CLIP_FILE = re.compile(r"[0-9a-f]{16}\.parquet")


def _s3_uri(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


class OutputReader(threading.Thread):
    """Lists ``prefix`` over and over and parses every object version it has not read yet,
    as a dashboard polling the output would; records rows read or the parse error."""

    def __init__(self, endpoint: str, prefix: str):
        super().__init__(daemon=True, name="output-reader")
        self.client = boto3.client("s3", endpoint_url=endpoint)
        self.prefix = prefix
        self.seen: dict[tuple[str, str], int | str] = {}  # (key, ETag) → rows | error
        self.read_while_running = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.read_while_running += self.sweep()
            time.sleep(0.05)

    def sweep(self) -> int:
        read = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                       Prefix=self.prefix)
        for obj in (o for page in pages for o in page.get("Contents", [])):
            ident = (obj["Key"], obj["ETag"])
            if ident in self.seen:
                continue
            try:
                body = self.client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            except self.client.exceptions.NoSuchKey:
                continue  # removed between listing and reading: a stale timeline dropped
            try:
                self.seen[ident] = pq.read_table(io.BytesIO(body)).num_rows
            except (pa.ArrowInvalid, OSError) as exc:
                self.seen[ident] = f"{type(exc).__name__}: {exc}"
            read += 1
        return read

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        self.sweep()  # whatever landed after the last pass


class Captured(logging.Handler):
    """Keeps every record's message (and traceback) as one line of text."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {record.levelname} {text}")


@contextlib.contextmanager
def _driver_logging(handler: logging.Handler) -> Iterator[None]:
    """Send the driver's records to ``handler`` at DEBUG, with the logger levels the entry
    point sets (``infra.logs.setup_logging``); put every logger level back afterwards."""
    loggers = logging.root.manager.loggerDict
    levels = {name: lg.level for name, lg in loggers.items() if isinstance(lg, logging.Logger)}
    root_level = logging.root.level
    logging.root.addHandler(handler)
    setup_logging(logging.DEBUG)
    logging.root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logging.root.removeHandler(handler)
        logging.root.setLevel(root_level)
        for name, lg in loggers.items():
            if isinstance(lg, logging.Logger):
                lg.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture(scope="module")
def faulty(media, s3_endpoint, ray_local, tmp_path_factory):
    """Upload the inputs, run the job once through the faulty proxy, return what happened."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for key, case in S3_INPUTS.items():
        s3.upload_file(str(media[case]), BUCKET, key)
    local_dir = tmp_path_factory.mktemp("local-inputs").resolve()
    (local_dir / "sub").mkdir()
    shutil.copy(media["not_a_video"], local_dir / LOCAL_NAME)
    manifest = [_s3_uri(key) for key in S3_INPUTS] + [
        _s3_uri(MISSING_KEY), str(local_dir / "sub" / ".." / LOCAL_NAME)]
    s3.put_object(Bucket=BUCKET, Key="manifest.txt",
                  Body=("# storage faults\n" + "\n".join(manifest) + "\n").encode())
    keys_before = _bucket_keys(s3)
    staging = tmp_path_factory.mktemp("staging")

    with FaultyS3Proxy(s3_endpoint) as proxy, pytest.MonkeyPatch.context() as env:
        rules = {
            "transient": proxy.add_rule(FaultRule(rf"^{BUCKET}/in/transient\.mp4$", status=503,
                                                  code="SlowDown", times=2)),
            "slow": proxy.add_rule(FaultRule(rf"^{BUCKET}/in/slow\.mp4$",
                                             methods={"HEAD", "GET"}, delay_s=SLOW_S)),
            "denied": proxy.add_rule(FaultRule(rf"^{BUCKET}/in/denied\.mp4$",
                                               methods={"HEAD", "GET"}, status=403,
                                               code="AccessDenied")),
            "stalled_once": proxy.add_rule(FaultRule(rf"^{BUCKET}/in/stalled_once\.mp4$",
                                                     stall_s=STALL_S, times=1)),
            "put": proxy.add_rule(FaultRule(rf"^{BUCKET}/out/clips/", methods={"PUT"},
                                            status=500, code="InternalError", times=1)),
            "stalled_put": proxy.add_rule(FaultRule(rf"^{BUCKET}/out/timelines/",
                                                    methods={"PUT"}, stall_s=STALL_S, times=1)),
        }
        config = load_config(None, [f"storage.endpoint_url={proxy.url}",
                                    f"storage.read_timeout_s={READ_TIMEOUT_S}",
                                    "tracking.enabled=false", f"staging_dir={staging}"])
        env.setenv("AWS_ACCESS_KEY_ID", DRIVER_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", DRIVER_SECRET)
        reader = OutputReader(s3_endpoint, "out/")
        handler = Captured()
        with _driver_logging(handler):
            reader.start()
            started = time.perf_counter()
            try:
                result = run(_s3_uri("manifest.txt"), _s3_uri("out"), config)
            finally:
                wall = time.perf_counter() - started
                reader.stop()
        counts = proxy.counts()
        signatures = proxy.signatures

    clips = result.clips.set_index(S.URI)
    return {"clips": clips, "wall": wall, "rules": rules, "counts": counts,
            "signatures": signatures, "reader": reader, "log_lines": handler.lines,
            "s3": s3, "keys_before": keys_before, "keys_after": _bucket_keys(s3),
            "local_dir": local_dir, "staging": staging}


def _bucket_keys(s3, bucket: str = BUCKET) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def _row(faulty, name: str):
    uri = str(faulty["local_dir"] / name) if name == LOCAL_NAME else _s3_uri(name)
    return faulty["clips"].loc[uri]


def test_every_input_ends_in_its_expected_status(faulty):
    clips = faulty["clips"]
    assert clips.index.is_unique and len(clips) == len(EXPECTED_STATUS)
    got = {name: _row(faulty, name)[S.STATUS] for name in EXPECTED_STATUS}
    assert got == EXPECTED_STATUS, {n: _row(faulty, n)[S.ERROR] for n in EXPECTED_STATUS}


def test_transient_503s_are_retried(faulty):
    row = _row(faulty, "in/transient.mp4")
    assert row[S.STATUS] == "ok", row[S.ERROR]
    assert faulty["rules"]["transient"].applied == 2
    # two answered 503 SlowDown, then one reached the server
    assert faulty["counts"][("GET", f"{BUCKET}/in/transient.mp4")] >= 3


def test_slow_responses_still_succeed(faulty):
    row = _row(faulty, "in/slow.mp4")
    assert row[S.STATUS] == "ok", row[S.ERROR]
    assert faulty["rules"]["slow"].applied >= 2  # the driver's HEAD, the worker's HEAD + GET
    assert row[S.PROCESSING_S] >= SLOW_S  # staging waited for the delayed responses
    # slower than usual but within the read timeout: waited out, not retried
    assert faulty["counts"][("GET", f"{BUCKET}/in/slow.mp4")] == 1


def test_stalled_read_is_retried_after_the_read_timeout(faulty):
    row = _row(faulty, "in/stalled_once.mp4")
    assert row[S.STATUS] == "ok", row[S.ERROR]
    assert faulty["rules"]["stalled_once"].applied == 1
    # the unanswered GET, then the retry once the worker's client gave up on it (a plain run
    # reads an input in one GET, as slow.mp4 shows)
    assert faulty["counts"][("GET", f"{BUCKET}/in/stalled_once.mp4")] == 2
    timelines = {k for k in faulty["keys_after"] if k.startswith("out/timelines/")}
    assert f"out/timelines/{clip_id_for(_s3_uri('in/stalled_once.mp4'))}.parquet" in timelines


def test_denied_object_is_a_clear_read_error(faulty):
    row = _row(faulty, "in/denied.mp4")
    assert row[S.STATUS] == "read_error"
    assert re.search(r"access denied", row[S.ERROR], re.IGNORECASE), row[S.ERROR]
    assert "Traceback" not in row[S.ERROR] and "\n" not in row[S.ERROR]
    assert faulty["rules"]["denied"].applied >= 1


def test_missing_object_is_a_clear_read_error(faulty):
    row = _row(faulty, MISSING_KEY)
    assert row[S.STATUS] == "read_error"
    assert row[S.ERROR].startswith("cannot read input"), row[S.ERROR]
    assert "not found" in row[S.ERROR] and "Traceback" not in row[S.ERROR]


def test_failed_output_put_is_retried(faulty):
    assert faulty["rules"]["put"].applied == 1
    clip_puts = [n for (method, key), n in faulty["counts"].items()
                 if method == "PUT" and key.startswith(f"{BUCKET}/out/clips/")]
    assert sorted(clip_puts)[-1] == 2  # the one answered 500, then its retry
    clip_keys = {k for k in faulty["keys_after"] if k.startswith("out/clips/")}
    assert len(clip_keys) == len(EXPECTED_STATUS)


def test_stalled_output_put_is_retried(faulty):
    assert faulty["rules"]["stalled_put"].applied == 1
    timeline_puts = [n for (method, key), n in faulty["counts"].items()
                     if method == "PUT" and key.startswith(f"{BUCKET}/out/timelines/")]
    assert sorted(timeline_puts)[-1] == 2  # the one never answered, then its retry
    with_timeline = {clip_id_for(_s3_uri(name)) for name, status in EXPECTED_STATUS.items()
                     if status in ("ok", "no_face")}
    assert {k for k in faulty["keys_after"] if k.startswith("out/timelines/")} == {
        f"out/timelines/{clip_id}.parquet" for clip_id in with_timeline}


def test_readers_never_see_a_partial_parquet(faulty):
    reader, keys_after = faulty["reader"], faulty["keys_after"]
    broken = {ident: v for ident, v in reader.seen.items() if isinstance(v, str)}
    assert not broken
    assert reader.read_while_running > 0, "the reader read nothing while the job wrote"
    out_keys = {k for k in keys_after if k.startswith("out/")}
    assert {key for key, _ in reader.seen} == out_keys
    assert all(rows > 0 for rows in reader.seen.values())
    # each object is one PUT (appears whole), never a multipart upload
    assert not any(method == "POST" for method, _ in faulty["counts"])


def test_outputs_cannot_escape_the_output_prefix(faulty):
    keys_after, keys_before = faulty["keys_after"], faulty["keys_before"]
    new = keys_after - keys_before
    assert all(k.startswith(("out/clips/", "out/timelines/", "out/moments/", "out/segments/"))
               for k in new), sorted(new)
    assert all(_CLIP_FILE.fullmatch(k.rsplit("/", 1)[1]) for k in new), sorted(new)
    ids = {clip_id_for(uri) for uri in faulty["clips"].index}
    assert {k.rsplit("/", 1)[1].removesuffix(".parquet") for k in new} <= ids
    assert f"out/clips/{clip_id_for(_s3_uri('in/../../escape.mp4'))}.parquet" in new
    assert f"out/timelines/{clip_id_for(_s3_uri('in/../../escape.mp4'))}.parquet" in new
    # the dot segments reached the server as written: no client layer normalised the key
    # into another object (or another bucket)
    assert faulty["counts"][("GET", f"{BUCKET}/in/../../escape.mp4")] >= 1
    # the local input: canonical path (the '..' segment resolved, the '..' in the name kept),
    # and nothing written beside it or in the node's staging folder
    local = faulty["local_dir"]
    assert str(local / LOCAL_NAME) in faulty["clips"].index
    assert sorted(p.name for p in local.rglob("*")) == sorted([LOCAL_NAME, "sub"])
    assert list(faulty["staging"].iterdir()) == []


def _ray_log_text() -> str:
    """Every readable log file of the running Ray session (driver, raylet, workers)."""
    node = getattr(ray._private.worker, "_global_node", None)  # this session's folder
    logs = Path(node.get_logs_dir_path()) if node else Path("/tmp/ray/session_latest/logs")
    texts = []
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size < 64 << 20:
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def test_logs_hold_no_credentials_or_signatures(faulty):
    driver = "\n".join(faulty["log_lines"])
    assert "manifest.txt" in driver  # the capture worked: the driver logged the run
    workers = _ray_log_text()
    assert "denied.mp4" in workers, "no worker log found with the staging warning"
    assert faulty["signatures"], "the proxy saw no signed requests"
    # os.environ holds again what Ray's workers inherited (conftest's unless set outside)
    secrets = [DRIVER_SECRET, DRIVER_KEY_ID, os.environ["AWS_SECRET_ACCESS_KEY"],
               "X-Amz-Signature", "X-Amz-Credential", "Signature=", *faulty["signatures"]]
    for name, text in (("driver", driver), ("ray", workers)):
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{name} logs hold {leaked}"


HUNG_BUCKET = "storage-faults-hung"
HUNG_TIMEOUT_S = 0.5
# key → fixture case: the hung input (never delivered) and a clip processed beside it
HUNG_INPUTS = {"in/hung.mp4": "face_speech", "in/neighbour.mp4": "face_silence"}


@pytest.fixture(scope="module")
def hung(media, s3_endpoint, ray_local, tmp_path_factory):
    """A second run: every GET of ``in/hung.mp4`` goes unanswered.  ``max_attempts=1`` and a
    0.5 s read timeout keep its 25 tries (s3fs's 5 × 5, see StorageConfig) to ~25 s."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=HUNG_BUCKET)
    for key, case in HUNG_INPUTS.items():
        s3.upload_file(str(media[case]), HUNG_BUCKET, key)
    uris = [f"s3://{HUNG_BUCKET}/{key}" for key in HUNG_INPUTS]
    s3.put_object(Bucket=HUNG_BUCKET, Key="manifest.txt", Body="\n".join(uris).encode())
    with FaultyS3Proxy(s3_endpoint) as proxy:
        rule = proxy.add_rule(FaultRule(rf"^{HUNG_BUCKET}/in/hung\.mp4$", stall_s=STALL_S))
        config = load_config(None, [f"storage.endpoint_url={proxy.url}",
                                    f"storage.read_timeout_s={HUNG_TIMEOUT_S}",
                                    "storage.max_attempts=1", "tracking.enabled=false",
                                    f"staging_dir={tmp_path_factory.mktemp('staging-hung')}"])
        result = run(f"s3://{HUNG_BUCKET}/manifest.txt", f"s3://{HUNG_BUCKET}/out", config)
        gets = proxy.count("GET", f"{HUNG_BUCKET}/in/hung.mp4")
    return {"clips": result.clips.set_index(S.URI), "rule": rule, "gets": gets,
            "keys": _bucket_keys(s3, HUNG_BUCKET)}


def test_read_that_always_stalls_is_a_timeout_read_error(hung):
    clips = hung["clips"]
    assert len(clips) == len(HUNG_INPUTS) and clips.index.is_unique
    row = clips.loc[f"s3://{HUNG_BUCKET}/in/hung.mp4"]
    assert row[S.STATUS] == "read_error", row[S.ERROR]
    assert re.search(r"read timeout", row[S.ERROR], re.IGNORECASE), row[S.ERROR]
    assert "Traceback" not in row[S.ERROR] and "\n" not in row[S.ERROR]
    # every try was a real request that went unanswered: 5 (s3fs's ranged read) × 5 (s3fs's
    # call) × 1 (storage.max_attempts), then the clip gave up; the job did not
    assert hung["gets"] == hung["rule"].applied == 25
    neighbour = clips.loc[f"s3://{HUNG_BUCKET}/in/neighbour.mp4"]
    assert neighbour[S.STATUS] == "ok", neighbour[S.ERROR]
    ids = {clip_id_for(uri) for uri in clips.index}
    assert {k for k in hung["keys"] if k.startswith("out/clips/")} == {
        f"out/clips/{clip_id}.parquet" for clip_id in ids}
    neighbour_id = clip_id_for(f"s3://{HUNG_BUCKET}/in/neighbour.mp4")
    assert {k for k in hung["keys"] if k.startswith("out/timelines/")} == {
        f"out/timelines/{neighbour_id}.parquet"}


def test_local_writes_are_temp_then_rename(tmp_path):
    """A reader polling the folder sees the old file or the new one, never a partial one; the
    temporary file is hidden, and gone afterwards."""
    target = tmp_path / "clips" / "0123456789abcdef.parquet"
    small = pa.table({"x": pa.array(range(10), pa.int64())})
    write_parquet_atomic(small, str(target), {})
    old_inode = target.stat().st_ino
    big = pa.table({"x": pa.array(range(3_000_000), pa.int64()),
                    "y": pa.array([float(i) for i in range(3_000_000)])})
    seen_rows: set[int] = set()
    seen_names: set[str] = set()
    errors: list[str] = []
    written, checked_after, done = threading.Event(), threading.Event(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            after = written.is_set()
            seen_names.update(p.name for p in target.parent.iterdir())
            try:
                seen_rows.add(pq.read_metadata(target).num_rows)
            except (pa.ArrowInvalid, OSError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            if after:
                checked_after.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        write_parquet_atomic(big, str(target), {})
        written.set()
        assert checked_after.wait(timeout=10)
    finally:
        done.set()
        watcher.join(timeout=10)
    assert not errors
    assert target.stat().st_ino != old_inode  # a new file renamed over the old one
    assert seen_rows <= {10, 3_000_000} and 3_000_000 in seen_rows
    temps = {n for n in seen_names if n != target.name}
    assert temps and all(n.startswith(f".{target.name}.") and n.endswith(".tmp") for n in temps)
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    assert pq.read_table(target).num_rows == 3_000_000

