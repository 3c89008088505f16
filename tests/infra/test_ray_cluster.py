"""Reading back the blocks Ray Data dropped: the records it logs on the driver, as Ray 2.60
words them, turned into the `failed` clip's reason.  The end-to-end version (a real SIGKILLed
decoder) is tests/pipelines/test_faults.py."""

from __future__ import annotations

import logging

import pytest
from ray.exceptions import RayTaskError, WorkerCrashedError

from infra.ray_cluster import BlockError, BlockErrors
from pipelines.runner import failure_reason

DECODE_OP = "Map(stage)->Map(probe)->FlatMap(decode)->MapBatches(VoiceFeatures)"


def _ray_data_logs(exc: BaseException, op: str = DECODE_OP) -> None:
    # What streaming_executor_state logs when max_errored_blocks lets it go on.
    logging.getLogger("ray.data._internal.execution.streaming_executor_state").error(
        f'An exception was raised from a task of operator "{op}". Ignoring this exception '
        "with remaining max_errored_blocks=unlimited.", exc_info=exc)


def test_dropped_blocks_are_collected_while_installed_only():
    with BlockErrors() as dropped:
        _ray_data_logs(WorkerCrashedError())
        logging.getLogger("ray.data").error("some other Ray Data error")
    _ray_data_logs(WorkerCrashedError())  # after the block: not collected
    assert len(dropped.errors) == 1
    error = dropped.errors[0]
    assert error.error_type == "WorkerCrashedError"
    assert error.stages == "stage → probe → decode → VoiceFeatures"
    assert error.message.startswith("The worker died unexpectedly")


def test_task_errors_are_unwrapped_to_the_users_exception():
    try:
        raise ValueError("chunk 3 has no frames\nmore detail")
    except ValueError as cause:
        wrapped = RayTaskError("decode", "traceback text", cause)
    with BlockErrors() as dropped:
        _ray_data_logs(wrapped, "MapBatches(FaceDetector)")
    assert dropped.errors == [BlockError("MapBatches(FaceDetector)", "ValueError",
                                         "chunk 3 has no frames")]


def test_reason_names_the_stage_and_that_the_worker_died():
    crash = BlockError(DECODE_OP, "WorkerCrashedError", "The worker died unexpectedly.")
    reason = failure_reason([crash, crash])
    assert reason == ("processing failed on every retry (the worker process died: killed, "
                      "out of memory, or a crash in native code such as a decoder): stage → "
                      "probe → decode → VoiceFeatures: WorkerCrashedError: The worker died "
                      "unexpectedly.")


@pytest.mark.parametrize("count", [2, 5])
def test_different_errors_are_listed_as_candidates(count):
    errors = [BlockError("MapBatches(FaceDetector)", "ValueError", f"bad {i}")
              for i in range(count)]
    reason = failure_reason(errors)
    assert reason.startswith("processing failed on every retry; this run's failed tasks: ")
    assert "FaceDetector: ValueError: bad 0" in reason and "died" not in reason
    assert reason.endswith("; and 2 more") == (count == 5)


def test_reason_without_any_error_says_so():
    assert "no error reached the driver" in failure_reason([])
