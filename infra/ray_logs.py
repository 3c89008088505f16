"""Reading Ray's own records: which blocks Ray Data dropped, and why.

The only module that parses Ray's log wording.  It was read from Ray ``RAY_VERSION``
(``streaming_executor_state._record_errored_block``); ``tests/infra/test_ray_logs.py``
provokes a real dropped block on the installed Ray, so an upgrade that rewords it fails there
first instead of turning every `failed` clip's reason into "no error reached the driver".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

RAY_VERSION = "2.60.0"

# Ray Data's words when it drops a block under DataContext.max_errored_blocks (Ray 2.60,
# streaming_executor_state._record_errored_block); the job reads the operator name from it.
_IGNORED_BLOCK = re.compile(r'An exception was raised from a task of operator "(?P<op>[^"]+)"')


# A Python traceback's last line: "module.Type: message" (or the bare type).
_RAISED = re.compile(r"^(?:[\w.]+\.)?(?P<type>\w+)(?:: (?P<message>.*))?$")
_CHAINED = "The above exception was the direct cause of the following exception"


def _users_exception(exc: BaseException | None) -> tuple[str, str]:
    """(type name, first line of the message) of the step's own exception inside Ray's
    wrappers.  A task's error arrives as ``RayTaskError(...)`` whose ``cause`` is the
    exception; for an exception raised in a UDF, Ray Data raises ``UserCodeException``
    ("UDF failed to process a data block.") from it, and only the text of the task's
    traceback still holds the original (the chain does not survive the trip to the driver):
    its type and message are read from there."""
    cause = getattr(exc, "cause", None) or exc
    if cause is None:
        return "?", "no message"
    name, text = type(cause).__name__, str(cause)
    if name == "UserCodeException" and _CHAINED in str(exc):
        lines = str(exc).split(_CHAINED)[0].strip().splitlines()
        frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
        for line in lines[frames[-1] + 1:] if frames else []:
            raised = _RAISED.match(line)
            if raised and not line.startswith(" "):
                return raised["type"], raised["message"] or "no message"
    message = next((line.strip() for line in text.strip().splitlines() if line.strip()),
                   "no message")
    return name, message


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
        name, message = _users_exception(exc)
        self.errors.append(BlockError(match["op"], name, message[:300]))

    def __enter__(self) -> BlockErrors:
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)
