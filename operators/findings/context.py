"""What the driver knows of a clip besides its media: session metadata and task markers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Marker:
    """A task marker: ``task`` over ``[start_s, end_s)`` clip seconds; ``origin`` names the
    row it came from (file and line) for warnings."""

    task: str
    start_s: float
    end_s: float
    origin: str


@dataclass(frozen=True)
class ClipContext:
    """Per clip: the manifest's metadata (``schema.METADATA_COLUMNS``; missing ones None),
    the clip's task markers, and warnings the driver already has (bad marker rows, bad
    metadata values)."""

    metadata: dict[str, str | datetime | None] = field(default_factory=dict)
    markers: tuple[Marker, ...] = ()
    warnings: tuple[str, ...] = ()


def usable_markers(markers: tuple[Marker, ...], duration_s: float | None, tolerance_s: float
                   ) -> tuple[list[Marker], list[str]]:
    """The markers that lie within the recording (``duration_s``, None or NaN: unknown, all
    kept), and a warning for each that does not."""
    if duration_s is None or math.isnan(duration_s):
        return list(markers), []
    kept, warnings = [], []
    for marker in markers:
        if marker.end_s > duration_s + tolerance_s:
            warnings.append(f"{marker.origin}: task {marker.task!r} {marker.start_s:g}–"
                            f"{marker.end_s:g} s lies past the recording's end "
                            f"({duration_s:.1f} s); marker ignored")
        else:
            kept.append(marker)
    return kept, warnings
