"""Per-step resources: each step's config carries a :class:`StageResources`, and the step
adapter (``operators.step.apply_steps``) turns it into Ray's arguments, so resource policy is
never scattered over the pipeline code.
"""

from __future__ import annotations

from typing import Any

import ray.data
from pydantic import BaseModel, ConfigDict, Field


class StageResources(BaseModel):
    """Resources of one Ray Data stage.

    ``actors`` is the actor-pool size for stateful (model-loading) stages: ``(min, max)``
    lets the autoscaler grow the pool while work is queued.  ``num_gpus`` may be fractional
    so several small-model actors share one GPU.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int | None = Field(None, ge=1)
    actors: tuple[int, int] = (1, 2)
    # Retries of a batch whose worker died (a decoder crash, an OOM kill).  Bounded, so a
    # recording that kills every worker ends as a `failed` clip instead of looping forever
    # (Ray Data would retry actor tasks without limit).
    max_retries: int = Field(3, ge=0)

    def remote_args(self, *, stateful: bool) -> dict[str, Any]:
        """Resources and retry policy as Ray remote arguments."""
        args: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            args["num_gpus"] = self.num_gpus
        if stateful:
            args.update(max_restarts=-1, max_task_retries=self.max_retries)
        else:
            args["max_retries"] = self.max_retries
        return args

    def map_batches_kwargs(self, *, stateful: bool) -> dict[str, Any]:
        kwargs = {"batch_size": self.batch_size, **self.remote_args(stateful=stateful)}
        if stateful:
            kwargs["compute"] = ray.data.ActorPoolStrategy(
                min_size=self.actors[0], max_size=self.actors[1]
            )
        return kwargs
