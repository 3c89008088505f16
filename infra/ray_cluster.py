"""Connecting to Ray (an existing cluster when an address is given, else a local one), and
reading back the blocks Ray Data dropped."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

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


# Ray Data's words when it drops a block under DataContext.max_errored_blocks (Ray 2.60,
# streaming_executor_state._record_errored_block); the job reads the operator name from it.
_IGNORED_BLOCK = re.compile(r'An exception was raised from a task of operator "(?P<op>[^"]+)"')


@dataclass(frozen=True)
class BlockError:
    """A block Ray Data gave up on: the operator (fused stages, e.g.
    ``Map(stage)->Map(probe)->FlatMap(decode)``) and the exception after the last retry."""

    operator: str
    error_type: str
    message: str

    @property
    def stages(self) -> str:
        """The operator's stage names, readable: ``stage → probe → decode``."""
        names = re.findall(r"\(([^()]+)\)", self.operator)
        return " → ".join(names) if names else self.operator

    def describe(self) -> str:
        return f"{self.stages}: {self.error_type}: {self.message}"


class BlockErrors(logging.Handler):
    """Collects the blocks Ray Data drops (``max_errored_blocks = -1``) while installed on
    the driver (``with BlockErrors() as errors:``), so a clip whose rows never arrive can be
    recorded with the reason (a killed worker, an exception) instead of a generic one."""

    LOGGER = "ray.data"

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.errors: list[BlockError] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _IGNORED_BLOCK.search(record.getMessage())
        if not match:
            return
        exc = record.exc_info[1] if record.exc_info else None
        # A task's exception arrives wrapped (RayTaskError(...)): its cause is the user's.
        cause = getattr(exc, "cause", None) or exc
        text = str(cause).strip().splitlines() if cause is not None else []
        message = next((line.strip() for line in text if line.strip()), "no message")
        self.errors.append(BlockError(match["op"], type(cause).__name__ if cause else "?",
                                      message[:300]))

    def __enter__(self) -> BlockErrors:
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)
