"""Connecting to Ray: an existing cluster when an address is given, else a local one.
(Reading back the blocks Ray Data dropped: ``infra/ray_logs.py``.)"""

from __future__ import annotations

import logging
import os
import time

import ray

logger = logging.getLogger(__name__)


def connect(address: str | None, num_cpus: int | None = None,
            object_store_bytes: int | None = None) -> bool:
    """Connect to ``address`` (``auto``, ``host:port`` or ``ray://host:10001``) or start a
    local Ray (with an object store of ``object_store_bytes``, default Ray's 30 % of RAM).
    Returns True when this call started Ray (the caller then shuts it down).

    An already-initialised Ray (a notebook, a test fixture, ``ray job submit``) is reused.
    """
    if ray.is_initialized():
        return False
    address = resolve_address(address)
    if address:
        ray.init(address=address, log_to_driver=True)
        logger.info("connected to Ray at %s: %s", address, ray.cluster_resources())
        return True
    # A bounded object store keeps a long recording's frames from piling up in shared memory
    # when decoding outruns detection: past the bound Ray spills to disk or the job waits.
    ray.init(num_cpus=num_cpus, object_store_memory=object_store_bytes,
             include_dashboard=False)
    logger.info("started local Ray: %s", ray.cluster_resources())
    return True


def resolve_address(address: str | None) -> str | None:
    """The cluster :func:`connect` joins: ``address``, else ``$RAY_ADDRESS`` (set by
    ``ray job submit`` for the job's driver), else None (a local Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def cluster_has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def dead_nodes() -> dict[str, str]:
    """The cluster's nodes that are no longer alive: node id → a readable name (its address,
    a short id and, when Ray gives one, why it died)."""
    dead = {}
    for node in ray.nodes():
        if node.get("Alive", True):
            continue
        why = node.get("DeathReasonMessage") or ""
        dead[node["NodeID"]] = (f"{node.get('NodeManagerAddress', '?')} (node id "
                                f"{node['NodeID'][:12]}{', ' + why if why else ''})")
    return dead


def lost_since(already_dead: dict[str, str], wait_s: float = 0.0) -> list[str]:
    """The nodes that died since ``already_dead`` was read (:func:`dead_nodes`), by name.
    With ``wait_s``, waits up to that long for one: a node that vanished is declared dead
    only when it has missed Ray's health checks, seconds after its tasks failed."""
    deadline = time.monotonic() + wait_s
    while True:
        lost = [name for node, name in dead_nodes().items() if node not in already_dead]
        if lost or time.monotonic() >= deadline:
            return lost
        time.sleep(1.0)
