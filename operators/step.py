"""One way to declare a step, and one adapter that applies steps to a Ray Dataset.

A :class:`Step` says what it is (name, grain, actor or task, resources) and what it touches
(the ``operators/schema.py`` columns it reads, writes and drops); ``setup()`` loads what it
needs once per worker and ``process()`` only computes.  :func:`apply_steps` does everything
else, once for every step:

* the plan is checked before any data moves (:func:`check_plan`): a step reading a column
  no earlier step writes is an error naming both;
* every step's output is made to conform to the declared columns (:func:`conform`): the
  same columns, in the schema's order, with the schema's types, whichever branch of the
  step made the row.  Ray's hash shuffle concatenates blocks with ``pa.concat_tables``,
  which refuses blocks whose columns differ in order or type: without this, a bad clip's
  row in the same shuffle partition as good clips' rows lost them all.  A row that cannot
  conform is a bug: :class:`ContractError` names the step and the column;
* compute time is added to ``STAGE_SECONDS``, freed heap is given back to the OS after
  every batch (``operators.memory``), GPU shares are given to steps that can use them.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import ray.data

from operators import schema as S
from operators.memory import release_freed_heap
from operators.resources import StageResources


class Grain(StrEnum):
    """What one call of ``Step.process`` receives and returns."""

    ROW = "row"  # one row dict in, one row dict out (Dataset.map)
    ROWS = "rows"  # one row dict in, an iterator of row dicts out (Dataset.flat_map)
    BATCH = "batch"  # a batch in ``batch_format`` in and out (Dataset.map_batches)
    CLIP = "clip"  # all rows of one clip in, a batch out (groupby(CLIP_ID).map_groups)


class ContractError(RuntimeError):
    """A step's output breaks the data contract: a bug in that step, never bad input."""


class Step:
    """One processing step of a job.

    Subclasses set the class attributes and implement :meth:`process` (and :meth:`setup`
    when they hold a model).  ``reads``/``writes``/``drops`` are column names of
    ``operators/schema.py``; a step whose output is a new kind of row (a clip summary, a
    written clip row) sets ``replaces = True``: its output is exactly ``writes``.
    ``actor`` steps hold state worth keeping (a model): they run in an actor pool; others run
    as stateless tasks, which Ray fuses with their neighbours when their resources agree.
    """

    name: ClassVar[str]
    grain: ClassVar[Grain] = Grain.BATCH
    batch_format: ClassVar[str] = "numpy"
    actor: ClassVar[bool] = False
    gpu: ClassVar[bool] = False  # may take a GPU share when the cluster has GPUs
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    drops: ClassVar[tuple[str, ...]] = ()
    replaces: ClassVar[bool] = False
    output_schema: ClassVar[pa.Schema | None] = None  # declared types of non-chunk columns

    def __init__(self, resources: StageResources | None = None):
        self.resources = resources or StageResources()
        self._set_up = False

    def setup(self) -> None:
        """Load what :meth:`process` needs; called once per worker process before it."""

    def process(self, data: Any) -> Any:
        raise NotImplementedError

    def ready(self) -> Step:
        """This step, set up (once): for using it alone, as tests do."""
        if not self._set_up:
            self.setup()
            self._set_up = True
        return self

    def __call__(self, data: Any) -> Any:
        """``process`` after a ``setup`` on first use: the step alone, as tests call it (a
        job runs it through :func:`apply_steps`)."""
        return self.ready().process(data)

    def __repr__(self) -> str:
        return f"<step {self.name}>"


# --- the columns each step's output must have ---------------------------------------------


def _declared(column: str, step: Step) -> pa.Field:
    if step.output_schema is not None and column in step.output_schema.names:
        return step.output_schema.field(column)
    if column in S.CHUNK_SCHEMA.names:
        return S.CHUNK_SCHEMA.field(column)
    raise ContractError(f"step {step.name} writes {column!r}, which operators/schema.py "
                        "does not declare")


def check_plan(steps: Sequence[Step], schema: pa.Schema) -> list[pa.Schema]:
    """The output schema of each step, given the first step's input ``schema``.  Raises
    ``ContractError`` before any data moves when a step reads (or drops) a column that no
    earlier step writes, or writes one that the data contract does not declare.

    A step's output keeps its input's column order, less what it drops, with what it adds
    at the end: one order per point of the plan, whichever branch makes a row."""
    plan = []
    for step in steps:
        have = set(schema.names)
        for kind, needed in (("reads", step.reads), ("drops", step.drops)):
            missing = [c for c in needed if c not in have]
            if missing:
                raise ContractError(
                    f"step {step.name} {kind} {missing}, which no earlier step writes "
                    f"(available: {sorted(have)})")
        if step.replaces:
            if step.output_schema is None or step.output_schema.names != list(step.writes):
                raise ContractError(f"step {step.name} replaces its rows: its output_schema "
                                    "must list exactly its writes, in order")
            schema = step.output_schema
        else:
            kept = [f for f in schema if f.name not in step.drops]
            names = {f.name for f in kept}
            schema = pa.schema(kept + [_declared(c, step) for c in step.writes
                                       if c not in names])
        plan.append(schema)
    return plan


# --- conforming outputs -------------------------------------------------------------------

_NUMPY_TYPES = {pa.string(): object, pa.bool_(): np.bool_, pa.int32(): np.int32,
                pa.int64(): np.int64, pa.float32(): np.float32, pa.float64(): np.float64}


def _violation(step: str, column: str, exc: Exception, kind: pa.DataType) -> ContractError:
    return ContractError(f"step {step}: column {column}: {exc} (declared {kind})")


def _python_value(value: Any, field: pa.Field, step: str) -> Any:
    """A row value as the declared type: scalars as Python scalars, lists as numpy arrays."""
    kind = field.type
    try:
        if pa.types.is_list(kind):
            return np.asarray(value, dtype=kind.value_type.to_pandas_dtype())
        if value is None:
            return None
        if pa.types.is_string(kind):
            if not isinstance(value, str):
                raise TypeError(f"{type(value).__name__} {value!r} is not a string")
            return str(value)
        if pa.types.is_boolean(kind):
            return bool(value)
        if pa.types.is_integer(kind):
            if isinstance(value, float) and not value.is_integer():
                raise TypeError(f"{value!r} is not a whole number")
            return int(value)
        if pa.types.is_floating(kind):
            return float(value)
    except (TypeError, ValueError) as exc:
        raise _violation(step, field.name, exc, kind) from exc
    return value


def _numpy_column(values: np.ndarray, field: pa.Field, step: str) -> np.ndarray:
    kind = field.type
    try:
        if pa.types.is_list(kind):
            want = kind.value_type.to_pandas_dtype()
            if values.dtype != object:  # Ray's fixed-shape tensor column: one array
                return values if values.dtype == want else values.astype(want)
            out = np.empty(len(values), dtype=object)
            out[:] = [np.asarray(v, dtype=want) for v in values]
            return out
        dtype = _NUMPY_TYPES.get(kind)
        if dtype is None or values.dtype == dtype:
            return values
        if dtype is object and values.dtype.kind not in "OU":
            raise TypeError(f"{values.dtype} is not a string")
        return values.astype(dtype)
    except (TypeError, ValueError) as exc:
        raise _violation(step, field.name, exc, kind) from exc


def _check_columns(present: Sequence[str], schema: pa.Schema, step: str) -> None:
    missing = [c for c in schema.names if c not in present]
    extra = [c for c in present if c not in schema.names]
    if missing or extra:
        raise ContractError(f"step {step}: output columns differ from its declaration "
                            f"(missing {missing}, undeclared {extra})")


def conform(data: Any, schema: pa.Schema, step: str, *, row: bool = False) -> Any:
    """``data`` with exactly ``schema``'s columns, in its order, of its types: a row dict
    (``row``; scalars become Python scalars, lists numpy arrays), a numpy batch dict or an
    Arrow table.  Raises ``ContractError`` naming ``step`` and the column when it cannot."""
    if isinstance(data, pa.Table):
        _check_columns(data.column_names, schema, step)
        table = data.select(schema.names)
        try:
            return table if table.schema.equals(schema) else table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ContractError(f"step {step}: {exc}") from exc
    _check_columns(list(data), schema, step)
    if row:
        return {f.name: _python_value(data[f.name], f, step) for f in schema}
    return {f.name: _numpy_column(np.asarray(data[f.name]), f, step) for f in schema}


# --- shared chores ------------------------------------------------------------------------

ModelT = TypeVar("ModelT")


def load_from_bytes(load: Callable[..., ModelT], checkpoint: bytes | None,
                    **kwargs: Any) -> ModelT:
    """``load(path, **kwargs)`` of a model file given as bytes (read on the driver, so
    workers on any node get the same weights without shared storage); ``load(None, …)``
    (the shipped default) when ``checkpoint`` is None."""
    if checkpoint is None:
        return load(None, **kwargs)
    with tempfile.NamedTemporaryFile(suffix=".pt") as handle:
        handle.write(checkpoint)
        handle.flush()
        return load(Path(handle.name), **kwargs)


def _add_seconds(data: Any, seconds: float) -> Any:
    """Share ``seconds`` of compute equally between the output's rows (``STAGE_SECONDS``)."""
    if isinstance(data, pa.Table) or S.STAGE_SECONDS not in data:
        return data
    values = data[S.STAGE_SECONDS]
    if isinstance(values, np.ndarray) and values.ndim:
        data[S.STAGE_SECONDS] = values + seconds / max(1, len(values))
    else:
        data[S.STAGE_SECONDS] = float(values) + seconds
    return data


# Steps set up in this worker process, by plan token: a task step is unpickled for every
# task, and its model should still load once per process.
_READY: dict[str, Step] = {}


class StepRunner:
    """What Ray runs for a step: set up once per process, time, conform, release heap.

    Also how tests run a step without Ray: ``StepRunner(step)(data)`` (with ``schema``, the
    output is conformed as in a job)."""

    def __init__(self, step: Step, schema: pa.Schema | None = None):
        self.step = step
        self.schema = schema
        self.token = uuid.uuid4().hex

    def _ready(self) -> Step:
        step = _READY.get(self.token)
        if step is None:
            self.step.setup()
            step = _READY[self.token] = self.step
        return step

    def _finish(self, data: Any, started: float, step: Step) -> Any:
        data = _add_seconds(data, time.perf_counter() - started)
        if self.schema is not None:
            data = conform(data, self.schema, step.name,
                           row=step.grain in (Grain.ROW, Grain.ROWS))
        return data

    def __call__(self, data: Any) -> Any:
        step = self._ready()
        started = time.perf_counter()
        if step.grain is Grain.ROWS:
            return self._each(step, step.process(data), started)
        out = self._finish(step.process(data), started, step)
        release_freed_heap()
        return out

    def _each(self, step: Step, rows: Iterator[dict[str, Any]], started: float
              ) -> Iterator[dict[str, Any]]:
        for row in rows:
            yield self._finish(row, started, step)
            # A long recording is many rows of one task: keep the worker's heap flat.
            release_freed_heap()
            started = time.perf_counter()


class _ActorRunner(StepRunner):
    """An actor's callable class: Ray constructs it once per actor, which sets the step up."""

    def __init__(self, step: Step, schema: pa.Schema):
        super().__init__(step, schema)
        self._ready()


def _named(runner: StepRunner) -> Callable[[Any], Any]:
    """The runner as a function named after its step: Ray names operators after their
    function (``Map(probe)``), and failure messages and stage timings quote those names."""

    def run(data: Any) -> Any:
        return runner(data)

    run.__name__ = run.__qualname__ = runner.step.name
    return run


def apply_steps(ds: ray.data.Dataset, steps: Sequence[Step], schema: pa.Schema, *,
                gpu_share: float = 0.0, shuffle_partitions: int = 1) -> ray.data.Dataset:
    """``ds`` (whose rows have ``schema``'s columns) through ``steps``, in order (see the
    module docstring).  ``gpu_share``: the GPU fraction each ``gpu`` step's workers take (0:
    none, no GPU in the cluster); the other steps then keep off GPU nodes while CPU nodes
    have room.  ``shuffle_partitions``: partitions of the ``groupby(CLIP_ID)`` before a
    ``CLIP`` step."""
    for step, out in zip(steps, check_plan(steps, schema), strict=True):
        resources = step.resources
        if gpu_share and step.gpu:
            resources = resources.model_copy(update={"num_gpus": gpu_share})
        # Ray Data spreads work over every node, GPU nodes included; Ray's default policy
        # places work that needs no GPU on nodes without one while any has room
        # (scheduler_avoid_gpu_nodes), so decoders leave the GPU nodes' CPUs to feed them.
        # (Every such step alike, or Ray would not fuse stage, probe, decode and voice.)
        placement = {"scheduling_strategy": "DEFAULT"} if gpu_share and not step.gpu else {}
        args = {**resources.remote_args(stateful=step.actor), **placement}
        if step.grain is Grain.ROW:
            ds = ds.map(_named(StepRunner(step, out)), **args)
        elif step.grain is Grain.ROWS:
            ds = ds.flat_map(_named(StepRunner(step, out)), **args)
        elif step.grain is Grain.CLIP:
            ds = ds.groupby(S.CLIP_ID, num_partitions=shuffle_partitions).map_groups(
                _named(StepRunner(step, out)), batch_format=step.batch_format, **args)
        elif step.actor:
            # A class named after the step, for the same reason as _named.
            actor = type(step.name, (_ActorRunner,), {"__module__": __name__})
            ds = ds.map_batches(actor, batch_format=step.batch_format,
                                fn_constructor_kwargs={"step": step, "schema": out},
                                **resources.map_batches_kwargs(stateful=True), **placement)
        else:
            ds = ds.map_batches(_named(StepRunner(step, out)), batch_format=step.batch_format,
                                **resources.map_batches_kwargs(stateful=False), **placement)
    return ds
