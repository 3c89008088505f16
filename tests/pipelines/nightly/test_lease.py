"""The output lease on a real S3 server (moto, conditional PUT) and on local disk: of
processes racing for it exactly one wins; stale leases (expired, or a dead process on this
host) are taken over; a live one is refused with a message naming its holder; a holder that
was overtaken learns it at its next renewal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from infra.lease import Lease, LeaseHeldError, LeaseInfo, LeaseLostError
from infra.storage import StorageConfig

RACE = """
import json, sys, time
from infra.lease import Lease, LeaseHeldError
directory, options, start = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
lease = Lease(directory, options, ttl_s=60)
late = time.time() > start
time.sleep(max(0.0, start - time.time()))
try:
    lease.acquire()
    outcome = "won"
except LeaseHeldError as exc:
    outcome = "lost: " + str(exc)
print(json.dumps({"outcome": outcome, "late": late}), flush=True)
time.sleep(max(0.0, start + 6 - time.time()))  # stay alive: a dead holder would be stale
"""


def _race(directory: str, options: dict, n: int = 4) -> list[dict]:
    start = time.time() + 10  # all processes have imported by then, even on a busy machine
    procs = [subprocess.Popen([sys.executable, "-c", RACE, directory, json.dumps(options),
                               str(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1])
               for p in procs]
    assert not any(r["late"] for r in results), "a racer started after the start time"
    return results


@pytest.fixture
def s3_dir(bucket, s3_endpoint):
    options = StorageConfig(endpoint_url=s3_endpoint).storage_options()
    return f"s3://{bucket[0]}/out/_state/lease", options


@pytest.mark.integration
@pytest.mark.parametrize("store", ["s3", "local"])
def test_exactly_one_of_racing_processes_gets_the_lease(store, request, tmp_path):
    if store == "s3":
        directory, options = request.getfixturevalue("s3_dir")
    else:
        directory, options = str(tmp_path / "lease"), {}
    results = _race(directory, options)
    outcomes = [r["outcome"] for r in results]
    assert outcomes.count("won") == 1, outcomes
    for lost in (o for o in outcomes if o != "won"):
        assert "another nightly run (owner" in lost and f"host {socket.gethostname()}" in lost
        assert "holds the lease on" in lost and "until" in lost


def _plant(directory: str, options: dict, **fields) -> LeaseInfo:
    now = datetime.now(UTC)
    info = LeaseInfo(**{"owner": "someone", "host": "other-host", "pid": 4242,
                        "generation": 7, "started_at": now - timedelta(hours=1),
                        "expires_at": now + timedelta(minutes=5), **fields})
    if not directory.startswith("s3://"):
        os.makedirs(directory, exist_ok=True)
    Lease(directory, options, ttl_s=60)._write_own(info)  # as that holder would
    return info


@pytest.mark.integration
def test_live_lease_is_refused_and_stale_ones_are_taken_over(s3_dir, tmp_path, caplog):
    directory, options = s3_dir
    live = _plant(directory, options)
    with pytest.raises(LeaseHeldError) as refused:
        Lease(directory, options, ttl_s=60).acquire()
    message = str(refused.value)
    assert "owner someone" in message and "host other-host" in message
    assert f"until {live.expires_at:%Y-%m-%d %H:%M:%S} UTC" in message

    # Expired (its holder stopped renewing): taken over, as the next generation.
    _plant(directory, options, generation=8, expires_at=datetime.now(UTC) - timedelta(
        seconds=1))
    with Lease(directory, options, ttl_s=60) as lease:
        assert lease.info.generation == 9
        assert "expired" in caplog.text
        with pytest.raises(LeaseHeldError):  # and now it is held again
            Lease(directory, options, ttl_s=60).acquire()
    # Released: the next one acquires at once.
    Lease(directory, options, ttl_s=60).acquire()

    # A holder on this host whose process is gone is stale without waiting for the TTL.
    local = str(tmp_path / "lease")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _plant(local, {}, host=socket.gethostname(), pid=dead.pid)
    assert Lease(local, {}, ttl_s=60).acquire().generation == 8
    assert f"its process {dead.pid} on this host is gone" in caplog.text


@pytest.mark.integration
def test_an_overtaken_holder_learns_it_when_renewing(s3_dir):
    directory, options = s3_dir
    holder = Lease(directory, options, ttl_s=60)
    holder.acquire()
    holder.renew()  # still its own
    _plant(directory, options, generation=holder.info.generation + 1)
    with pytest.raises(LeaseLostError):
        holder.renew()
    assert holder.lost
    with pytest.raises(LeaseLostError):
        holder.check()


def test_renewal_thread_extends_the_lease(tmp_path):
    with Lease(str(tmp_path / "lease"), {}, ttl_s=0.6) as lease:
        first = lease.info.expires_at
        time.sleep(1.0)
        assert lease.info.expires_at > first
        stored = LeaseInfo.from_bytes((tmp_path / "lease" / "000000000001.json").read_bytes())
        assert stored.expires_at == lease.info.expires_at and not lease.lost
    assert not os.listdir(tmp_path / "lease") or all(
        n.startswith(".") for n in os.listdir(tmp_path / "lease"))
