"""Reading back the blocks Ray Data dropped: the records it logs on the driver, as Ray 2.60
words them, turned into the `failed` clip's reason.  One test provokes a real dropped block
on the installed Ray; the end-to-end version (a real SIGKILLed decoder) is
tests/pipelines/test_faults.py."""

from __future__ import annotations

import logging

import pytest
from ray.exceptions import RayTaskError, WorkerCrashedError

from infra.ray_logs import BlockError, BlockErrors
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
                      "out of memory, or a crash in native code such as a decoder. If it "
                      "happens again, run the clip alone or give the workers more memory): "
                      "stage → probe → decode → VoiceFeatures: WorkerCrashedError: The worker "
                      "died unexpectedly.")


@pytest.mark.parametrize("count", [2, 5])
def test_different_errors_are_listed_as_candidates(count):
    errors = [BlockError("MapBatches(FaceDetector)", "ValueError", f"bad {i}")
              for i in range(count)]
    reason = failure_reason(errors)
    assert reason.startswith("processing failed on every retry (an unexpected error in a step: "
                             "a bug or an infrastructure fault, not a fault the recording was "
                             "found to have. Run the same command again")
    assert "; this run's failed tasks: " in reason
    assert "FaceDetector: ValueError: bad 0" in reason and "died" not in reason
    assert reason.endswith("; and 2 more") == (count == 5)


def test_reason_without_any_error_says_so():
    assert "no error reached the driver" in failure_reason([])


def test_rows_that_cannot_be_combined_are_called_a_bug_not_bad_input():
    """What a shuffle refusing blocks of different schemas, or a step breaking the data
    contract, looked like: the user is told it is emoray's fault and what to do."""
    for error_type in ("ArrowInvalid", "ContractError"):
        reason = failure_reason([BlockError("MapBatches(to_list_columns)", error_type,
                                            "Schema at index 1 was different:")])
        assert reason.startswith("processing failed on every retry (emoray could not combine "
                                 "this clip's rows: a bug in emoray, not a fault of the "
                                 "recording. Please report it with this message")
        assert reason.endswith(f"to_list_columns: {error_type}: Schema at index 1 was "
                               "different:")


def test_the_installed_ray_words_a_dropped_block_as_parsed(ray_local):
    """Pinned to the Ray version the parsing was written for: a real Ray Data job whose
    step raises on one block, with dropped blocks allowed, is read back with its operator's
    name and the step's exception.  On another Ray version, re-read its wording first."""
    import ray

    from infra.ray_logs import RAY_VERSION

    assert ray.__version__ == RAY_VERSION, (
        f"infra/ray_logs.py parses Ray {RAY_VERSION}'s log wording; check it against "
        f"Ray {ray.__version__} and update RAY_VERSION")

    def refuse_odd(batch):
        if batch["id"][0] % 2:
            raise ValueError(f"block {batch['id'][0]} refused")
        return batch

    ds = ray.data.range(4, override_num_blocks=4).map_batches(refuse_odd, batch_size=1,
                                                              max_retries=0)
    ds.context.max_errored_blocks = -1
    with BlockErrors() as dropped:
        kept = ds.take_all()
    assert sorted(row["id"] for row in kept) == [0, 2]
    assert sorted(e.message for e in dropped.errors) == ["block 1 refused", "block 3 refused"]
    assert {(e.stages, e.error_type) for e in dropped.errors} == {("refuse_odd", "ValueError")}
