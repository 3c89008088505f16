"""Configuration of the nightly job: the timeline job's tree plus a ``nightly`` section.

Every key of ``emoray run``'s config works the same here (``--set decode.sample_fps=10``);
``nightly.*`` adds what incremental, scheduled runs need.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from infra.tracking import TrackingConfig
from operators.schema import Status
from pipelines.emotion_timeline.config import TimelineJobConfig, load_config


class NightlySettings(BaseModel):
    """Incremental runs and the output lease."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A lease not renewed for this long is stale and may be taken over.  The holder renews
    # every third of it, so only a holder stalled for the whole TTL can be overtaken.
    lease_ttl_s: float = Field(600.0, gt=0)
    # Statuses retried by every run although the object and the models are unchanged:
    # transient faults (a worker died on every retry, storage could not deliver).  The other
    # non-ok statuses (decode_error, not_video, empty_file, partial, …) depend only on the
    # bytes, so they are redone only when the object or the models change.
    retry_statuses: tuple[str, ...] = (Status.FAILED.value, Status.READ_ERROR.value)


class NightlyTrackingConfig(TrackingConfig):
    """Tracking as for the timeline job; runs go to experiment ``nightly``."""

    experiment: str = "nightly"


class NightlyJobConfig(TimelineJobConfig):
    """Everything ``emoray nightly`` needs besides INPUT, OUT and the run's selection flags."""

    nightly: NightlySettings = NightlySettings()
    tracking: NightlyTrackingConfig = NightlyTrackingConfig()


def load_nightly_config(path: str | Path | None = None, overrides: list[str] | None = None
                        ) -> NightlyJobConfig:
    return load_config(path, overrides, model=NightlyJobConfig)
