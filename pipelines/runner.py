"""The job runner: how every job over the timeline pipeline runs, and how every command ends.

    start:    preflight ─ list inputs ─ load models                      (no Ray, no data)
    [the job's own steps: a lease, a plan, a tracked run, the writer]
    execute_plan:  connect ─ build ─ execute ─ record failures ─ shutdown

``emoray run`` (``pipelines/emotion_timeline/job.py``) and ``emoray nightly``
(``pipelines/nightly/job.py``) differ in their plan (nightly adds its state-recording step
after the writer) and their bookkeeping; the rest is here, once.  The jobs hand their own
parts in (how to load their models, their writer, their ``build``), so this module imports
no job.  :func:`run_command` ends
every ``emoray`` command the same way: one line per problem and an exit code per class of
failure (:class:`infra.preflight.ExitCode`, README "Exit codes"); a traceback only with
``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import queue
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import ray
from pydantic import ValidationError

from infra import preflight, ray_cluster, ray_logs
from infra.dashboards import stage_seconds
from infra.lease import LeaseHeldError, LeaseLostError
from infra.logs import setup_logging
from infra.preflight import STORAGE_ERRORS, ExitCode, JobError, PreflightConfig, Problem
from infra.storage import InputError, InputRef, StorageConfig, list_inputs
from infra.tracking import TrackingConfig, is_mlflow_uri
from operators import schema as S
from operators.io.files import is_remote
from operators.io.write_outputs import TimelineWriter

logger = logging.getLogger("emoray.runner")


# --- before any data moves -----------------------------------------------------------------
class JobConfig(Protocol):
    """What the runner reads of a job's config (``TimelineJobConfig`` and the trees that
    extend it)."""

    preflight: PreflightConfig
    storage: StorageConfig
    tracking: TrackingConfig
    address: str | None
    num_cpus: int | None
    resources: Any  # its local_object_store_gib: the object store of a local Ray


@dataclass(frozen=True)
class Job:
    """A job ready to run: its config, its output (local paths made absolute), its listed
    inputs and its models, loaded once on the driver (the timeline pipeline's
    ``ResolvedModels``)."""

    input_spec: str
    out: str
    config: JobConfig
    inputs: list[InputRef]
    models: Any


def start(input_spec: str, out: str, config: JobConfig,
          load_models: Callable[[Path], Any], *, model_sources: Sequence[str | None] = (),
          dry_run: bool = False) -> Job:
    """Preflight (``dry_run``: the output is only read, no tracking, no Ray), list the inputs,
    load the models (``load_models`` with a scratch folder deleted afterwards;
    ``model_sources`` are the configured model files or MLflow URIs, which need MLflow even
    without tracking).  Raises :class:`~infra.preflight.PreflightError`,
    :class:`~infra.storage.InputError` and what ``load_models`` raises."""
    if not is_remote(out):
        out = str(Path(out).resolve())
    uses_mlflow = any(m is not None and is_mlflow_uri(m) for m in model_sources) or (
        config.tracking.enabled and not dry_run)
    preflight.check_job(config.preflight, config.storage, inputs=[input_spec], output=out,
                        tracking=config.tracking if uses_mlflow else None,
                        address=None if dry_run else config.address, write_output=not dry_run)
    inputs = list_inputs(input_spec, config.storage, S.VIDEO_EXTENSIONS)
    with tempfile.TemporaryDirectory(prefix="emoray-model-") as scratch:
        models = load_models(Path(scratch))
    return Job(input_spec, out, config, inputs, models)


# --- running the plan ------------------------------------------------------------------------
class PlanBuilder(Protocol):
    """A job's ``build``, its config, inputs and models bound: the lazy dataset of the clip
    rows ``writer`` writes."""

    def __call__(self, *, writer: TimelineWriter, gpus: bool, cpus: float
                 ) -> ray.data.Dataset: ...


# A step after the writer (``map_batches`` function over written clip rows, CLIP_SCHEMA).
AfterWrite = Callable[[pa.Table], pa.Table]


@dataclass(frozen=True)
class Execution:
    """What running a plan gave: one clip row per input (written by the workers, or
    ``failed`` rows written on the driver) and Ray Data's timings."""

    clips: pd.DataFrame
    stage_stats: str  # Ray Data's per-operator timing report of this execution
    stage_seconds: dict[str, float]  # task wall seconds per operator


class OutputLostError(JobError):
    """The output stopped being writable during the run (the store went away, the folder
    was removed or made read-only): the run ends, what was written stays valid."""

    def __init__(self, problem: Problem):
        super().__init__(ExitCode.OUTPUT, [
            f"{problem.message} — the output stopped being writable during the run; what was "
            "written before stays valid: run the same command again to complete the rest"])


def execute_plan(job: Job, inputs: list[InputRef], writer: TimelineWriter, build: PlanBuilder,
                 *, after_write: Sequence[AfterWrite] = ()) -> Execution:
    """Connect to Ray (or start a local one), build the plan with the run's ``writer``, run
    it, record the inputs that got no row as ``failed`` with the same writer (and through
    ``after_write``, as the workers' rows went), and shut down a Ray this started."""
    config = job.config
    watch = output_watch(job.out, config)
    try:
        owns_ray = ray_cluster.connect(
            config.address, config.num_cpus,
            object_store_bytes=int(config.resources.local_object_store_gib * 2**30))
    except ConnectionError as exc:  # ray.init's answer when no cluster is found
        address = ray_cluster.resolve_address(config.address)
        raise JobError(ExitCode.RAY, [f"cannot reach the Ray cluster at {address}: {exc}"]
                       ) from exc
    try:
        ds = build(writer=writer, gpus=ray_cluster.cluster_has_gpus(),
                   cpus=ray.cluster_resources().get("CPU", 1.0))
        already_dead = ray_cluster.dead_nodes()
        # One node cannot be lost without its driver: only a cluster waits for the verdict.
        several = len(ray.nodes()) - len(already_dead) > 1
        return execute(ds, inputs, writer, after_write=after_write, output_check=watch,
                       lost_nodes=lambda suspect: ray_cluster.lost_since(
                           already_dead, _NODE_VERDICT_S if suspect and several else 0.0))
    finally:
        if owns_ray:
            ray.shutdown()


def output_watch(out: str, config: JobConfig) -> Callable[[], None]:
    """A check of the output during the run (the preflight's, bounded alike): raises
    :class:`OutputLostError` when ``out`` is no longer writable."""
    check = preflight.check_output(out, config.storage, config.preflight.timeout_s)

    def watch() -> None:
        problems = preflight.find_problems([check], config.preflight.timeout_s)
        if problems:
            raise OutputLostError(problems[0])

    return watch


def execute(ds: ray.data.Dataset, inputs: list[InputRef], writer: TimelineWriter, *,
            after_write: Sequence[AfterWrite] = (),
            output_check: Callable[[], None] | None = None,
            lost_nodes: Callable[[bool], list[str]] | None = None) -> Execution:
    """Run the job's dataset.  Every input ends with exactly one clip row: the one its
    workers wrote, or a ``failed`` row naming the reason, written by ``writer`` on the
    driver and passed through ``after_write``.  Whenever Ray Data drops a block,
    ``output_check`` runs: when the output went away, it raises and the run ends at once
    (every later write would fail too).  ``lost_nodes(suspect)``: the cluster's nodes that
    died during the run, named in the ``failed`` rows' reason (``suspect``: blocks were
    lost the way a node's death loses them, so it may wait for Ray's verdict)."""
    with ray_logs.BlockErrors() as dropped:
        written = _collect(ds, dropped, output_check)
    suspect = any(e.error_type in _WORKER_DIED + _NODE_LOST + _UNREACHABLE
                  for e in dropped.errors)
    lost = lost_nodes(suspect) if lost_nodes is not None else []
    if lost:
        logger.warning("node(s) lost during the run: %s", "; ".join(lost))
    clips = _record_failures(inputs, written, writer, dropped.errors, after_write=after_write,
                             output_check=output_check, lost_nodes=lost)
    return Execution(clips, ds.stats(), stage_seconds(ds))


@dataclass(frozen=True)
class _Raised:
    """What the consuming thread hands the driver thread when iterating failed."""

    error: BaseException


_END = object()
# How often the driver looks at dropped blocks while no clip row arrives.
_POLL_S = 0.5


def _collect(ds: ray.data.Dataset, dropped: ray_logs.BlockErrors,
             output_check: Callable[[], None] | None) -> pd.DataFrame:
    """The dataset's clip rows (``CLIP_SCHEMA``; empty with its columns when none came).
    They are consumed on a helper thread so the driver can act while none arrive: once the
    output's store is gone no row ever arrives again, but blocks keep being dropped."""
    arrived: queue.Queue = queue.Queue()

    def consume() -> None:
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                arrived.put(table)
        except Exception as exc:  # re-raised on the driver thread below
            arrived.put(_Raised(exc))
        else:
            arrived.put(_END)

    threading.Thread(target=consume, name="emoray-clip-rows", daemon=True).start()
    tables: list[pa.Table] = []
    checked = 0
    while True:
        try:
            item = arrived.get(timeout=_POLL_S)
        except queue.Empty:
            item = None
        if output_check is not None and len(dropped.errors) > checked:
            checked = len(dropped.errors)
            output_check()
        if item is _END:
            break
        if isinstance(item, _Raised):
            raise item.error
        if item is not None:
            tables.append(item)
    if not tables:
        return S.CLIP_SCHEMA.empty_table().to_pandas()
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def _record_failures(inputs: list[InputRef], clips: pd.DataFrame, writer: TimelineWriter,
                     dropped: list[ray_logs.BlockError], *,
                     after_write: Sequence[AfterWrite] = (),
                     output_check: Callable[[], None] | None = None,
                     lost_nodes: Sequence[str] = ()) -> pd.DataFrame:
    """Give every input without a clip row (its work failed on every retry) a `failed` row
    naming the reason (:func:`failure_reason`), so each input ends in exactly one terminal
    status.  ``clips`` may be empty, even without columns."""
    if S.URI not in clips.columns:
        clips = S.CLIP_SCHEMA.empty_table().to_pandas()
    if clips[S.URI].duplicated().any():
        raise RuntimeError(f"duplicate clip rows: {clips[S.URI][clips[S.URI].duplicated()]}")
    done = set(clips[S.URI])
    missing = [ref for ref in inputs if ref.uri not in done]
    if missing and len(missing) == len(inputs) > 1:
        if output_check is not None:
            output_check()  # a store gone since the last check explains it best
        raise RuntimeError("every clip failed in the workers: that is a bug or an "
                           "infrastructure fault, not bad input (see the Ray logs above)")
    reason = failure_reason(dropped, lost_nodes)
    rows = []
    for ref in missing:
        logger.error("%s: no result after retries (%s); recording it as failed", ref.uri, reason)
        try:
            rows.append(writer.write_failed(S.clip_id_for(ref.uri), ref.uri, reason))
        except STORAGE_ERRORS:
            if output_check is not None:
                output_check()
            raise
    if not rows:
        return clips
    table = pa.Table.from_pylist(rows, schema=S.CLIP_SCHEMA)
    for step in after_write:
        table = step(table)
    failed = pd.DataFrame(rows)
    return pd.concat([clips, failed], ignore_index=True) if len(clips) else failed


# What each kind of lost task means, in words a user can act on.
_WORKER_DIED = ("WorkerCrashedError", "OutOfMemoryError")
_ROWS_REFUSED = ("ContractError", "ArrowInvalid", "ArrowTypeError", "ArrowConversionError")
_NODE_LOST = ("NodeDiedError",)
# Errors of tasks whose node may have vanished before Ray declared it dead, and how long
# to wait for that verdict (Ray's health checks: 5 missed checks 3 s apart by default).
_UNREACHABLE = ("ActorUnavailableError", "ActorDiedError", "ObjectLostError",
                "OwnerDiedError", "ObjectReconstructionFailedError",
                "ObjectReconstructionFailedMaxAttemptsExceededError",
                "ObjectReconstructionFailedLineageEvictedError")
_NODE_VERDICT_S = 30.0
_ADVICE = {
    "lost": ("a node of the cluster was lost during the run, with the tasks and actors on "
             "it. Run the same command again to process this clip"),
    "died": ("the worker process died: killed, out of memory, or a crash in native code "
             "such as a decoder. If it happens again, run the clip alone or give the workers "
             "more memory"),
    "refused": ("emoray could not combine this clip's rows: a bug in emoray, not a fault of "
                "the recording. Please report it with this message; a rerun may succeed"),
    "other": ("an unexpected error in a step: a bug or an infrastructure fault, not a fault "
              "the recording was found to have. Run the same command again; if the clip "
              "fails again, report it with this message"),
}


def failure_reason(dropped: list[ray_logs.BlockError], lost_nodes: Sequence[str] = ()) -> str:
    """The `failed` message: what it means for the user, then which stages' task failed on
    every retry and with what (Ray's own words).  A lost task's error does not name its
    clip, so the errors are the run's: exact when every dropped block failed alike, else
    listed as the candidates.  ``lost_nodes`` (the nodes that died during the run) come
    first: a lost node explains its tasks' errors, whatever Ray called them."""
    types = {error.error_type for error in dropped}
    kind = ("lost" if lost_nodes or types & set(_NODE_LOST) else
            "died" if types & set(_WORKER_DIED) else
            "refused" if types & set(_ROWS_REFUSED) else "other")
    nodes = f": {'; '.join(lost_nodes)}" if lost_nodes else ""
    head = "processing failed on every retry"
    if not dropped:
        return (f"{head} ({_ADVICE[kind]}{nodes})" if lost_nodes else
                f"{head}; no error reached the driver (see the Ray logs)")
    described = list(dict.fromkeys(error.describe() for error in dropped))
    head = f"{head} ({_ADVICE[kind]}{nodes})"
    if len(described) == 1:
        return f"{head}: {described[0]}"
    shown = "; ".join(described[:3]) + (f"; and {len(described) - 3} more"
                                         if len(described) > 3 else "")
    return f"{head}; this run's failed tasks: {shown}"


# --- ending a command ------------------------------------------------------------------------
def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="on failure, also show the traceback")


def command_main(prog: str, description: str | None,
                 add_arguments: Callable[[argparse.ArgumentParser], None],
                 handler: Callable[[argparse.Namespace], int],
                 argv: list[str] | None = None) -> int:
    """A ``python -m`` entry point: its parser (``add_arguments`` and ``--debug``), logging,
    then :func:`run_command`."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    add_debug_argument(parser)
    setup_logging()
    return run_command(handler, parser.parse_args(argv))


def run_command(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command's ``handler``; a failure ends it with one line per problem (plus the
    traceback with ``--debug``) and its class's exit code."""
    debug = bool(getattr(args, "debug", False))
    try:
        return handler(args)
    except Exception as exc:  # the command boundary: every failure ends here
        code, lines = classify(exc)
        for index, line in enumerate(lines):
            logger.error("%s", line, exc_info=exc if debug and index == 0 else None)
        if code == ExitCode.FAILED and not debug:
            logger.error("(run again with --debug for the traceback)")
        return int(code)


def classify(exc: BaseException) -> tuple[ExitCode, list[str]]:
    """The exit code and the one-line messages of a failure (``ExitCode``'s classes)."""
    if isinstance(exc, JobError):
        return exc.code, list(exc.lines)
    if isinstance(exc, LeaseHeldError):
        return ExitCode.LEASE_HELD, [str(exc)]
    if isinstance(exc, LeaseLostError):
        return ExitCode.OUTPUT, [str(exc)]
    if isinstance(exc, ValidationError):
        return ExitCode.BAD_INPUT, [f"bad config: {_validation_details(exc)}"]
    if isinstance(exc, InputError | ValueError | FileNotFoundError):
        return ExitCode.BAD_INPUT, [" ".join(str(exc).split())]
    if isinstance(exc, STORAGE_ERRORS):
        code, cause = preflight.storage_cause(exc, "", "the storage endpoint")
        if code is not None:
            return code, [f"storage failed: {cause}"]
    return ExitCode.FAILED, [f"{type(exc).__name__}: {' '.join(str(exc).split())}"]


def _validation_details(exc: ValidationError) -> str:
    """pydantic's errors on one line: ``decode.sample_fps: Input should be greater than 0
    (got -1)``; a whole-config check names no key and no value."""
    details = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        got = error.get("input")
        shown = f" (got {got!r})" if key and not isinstance(got, dict | list) else ""
        details.append(f"{key + ': ' if key else ''}{error['msg']}{shown}")
    return "; ".join(details)
