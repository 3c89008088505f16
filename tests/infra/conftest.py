"""A separate Ray head for the tests that submit jobs over the Jobs API: ``ray start --head`` on
127.0.0.1, beside the session's in-process Ray, the way a cluster's head node runs it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _worker_ports(taken: list[int], count: int = 200) -> tuple[int, int]:
    """A block of ``count`` ports for the head's workers between Ray's default worker ports
    (10002–19999, the session's in-process Ray) and the kernel's ephemeral range (where
    ``_free_ports`` and every other component's ports come from), holding none of ``taken``;
    where in that gap depends on the process id, so heads of concurrent sessions differ."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    top = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    span = top - 20000 - count
    start = (os.getpid() * 211) % span
    for step in range(0, span, count + 1):
        low = 20000 + (start + step) % span
        if not any(low <= port <= low + count for port in taken):
            return low, low + count
    raise RuntimeError(f"no {count} worker ports free of {taken} below {top}")


@pytest.fixture(scope="module")
def ray_head_env() -> dict[str, str]:
    """Variables the head is started with on top of the test process's environment (what a
    head pod's spec adds); a test module overrides this fixture to give its head others."""
    return {}


@pytest.fixture(scope="module")
def ray_head(s3_endpoint, ray_head_env) -> Iterator[str]:
    """``ray start --head --block`` in its own short temp dir (Unix socket paths are limited
    to 107 bytes) with every port chosen free and ``ray_head_env`` in its environment, which
    its job drivers and workers inherit; terminating the blocking ``ray start`` stops exactly
    the processes it started (``ray stop`` would kill every Ray on the machine, including the
    test session's).  Module-scoped, so the head is gone when its module's tests are done.
    Yields the dashboard URL."""
    temp = tempfile.mkdtemp(prefix="rh")
    ports = _free_ports(8)
    gcs, dash, node, objm, agent, agent_grpc, metrics, renv = ports
    low, high = _worker_ports(ports)
    env = {**os.environ, **ray_head_env,
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           # No 30 s drain on SIGTERM: nothing runs on this node when the test stops it.
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    log = open(Path(temp) / "ray-start.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--include-dashboard", "true",
         "--node-manager-port", str(node), "--object-manager-port", str(objm),
         "--dashboard-agent-listen-port", str(agent),
         "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
         "--runtime-env-agent-port", str(renv), "--min-worker-port", str(low),
         "--max-worker-port", str(high), "--num-cpus", "2",
         "--object-store-memory", str(1 << 30), "--temp-dir", temp, "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=temp)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 180
    while True:
        with (contextlib.suppress(OSError),
              urllib.request.urlopen(f"{url}/api/version", timeout=2) as response):
            if response.status == 200:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.terminate()
            proc.wait(timeout=90)
            text = (Path(temp) / "ray-start.log").read_text(errors="replace")
            shutil.rmtree(temp, ignore_errors=True)
            raise RuntimeError(f"ray start failed:\n{text}")
        time.sleep(1)
    try:
        yield url
    finally:
        proc.terminate()  # `ray start --block` then stops the processes it started
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
