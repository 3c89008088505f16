"""Connecting to Ray: an existing cluster when an address is given, else a local one."""

from __future__ import annotations

import logging
import os

import ray

logger = logging.getLogger(__name__)


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` (``auto``, ``host:port`` or ``ray://host:10001``) or start a
    local Ray.  Returns True when this call started Ray (the caller then shuts it down).

    An already-initialised Ray (a notebook, a test fixture, ``ray job submit``) is reused.
    """
    if ray.is_initialized():
        return False
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]  # set by `ray job submit` for the job's driver
    if address:
        ray.init(address=address, log_to_driver=True)
        logger.info("connected to Ray at %s: %s", address, ray.cluster_resources())
        return True
    ray.init(num_cpus=num_cpus, include_dashboard=False)
    logger.info("started local Ray: %s", ray.cluster_resources())
    return True


def cluster_has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0
