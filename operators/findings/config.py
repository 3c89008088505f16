"""Thresholds of the findings rules: one typed tree, the job config's ``findings`` section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class KindRule(BaseModel):
    """How one kind's active windows become moments: a window is active when its rule's
    conditions hold and its score reaches ``threshold``; active windows closer than
    ``merge_gap_s`` join, and a moment shorter than ``min_duration_s`` is dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(ge=0)
    min_duration_s: float = Field(ge=0)
    merge_gap_s: float = Field(ge=0)


class FindingsConfig(BaseModel):
    """Baselines, moment rules and task-marker checks (README: Findings).

    The rules' defaults were tuned on the planted sessions' tuning half
    (``python -m pipelines.findings.evaluate``; figures in ``pipelines/findings/CARD.md``).
    The minimum baseline, the floors and the marker tolerance were set by hand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fewer confident windows than this (10 s at the default 0.5 s hop) give no baseline:
    # a median and MAD of a handful of windows would call ordinary variation a moment.
    min_baseline_windows: int = Field(20, ge=1)
    # A task of this name, when the markers give one, is the baseline instead of the session.
    baseline_task: str = "baseline"
    # Smallest robust spread per kind of signal: a baseline whose signal barely moves (a
    # still photo, a constant voice) would otherwise make any small change a huge z.
    probability_floor: float = Field(0.05, gt=0)
    valence_arousal_floor: float = Field(0.05, gt=0)
    pitch_floor_hz: float = Field(10.0, gt=0)
    loudness_floor_db: float = Field(2.0, gt=0)
    # Conditions shared by the rules, in baseline-relative units (z); these and the rules
    # below are the values tuned on the planted sessions' tuning half.
    valence_shift: float = Field(0.5, ge=0)
    emotion_rise: float = Field(3.0, ge=0)
    arousal_rise: float = Field(0.0, ge=0)
    # Scores are averaged over this centred span of confident windows before the
    # thresholds (0: each window alone), so a sustained shift is not cut by one window.
    smooth_s: float = Field(2.0, ge=0)
    frustration: KindRule = KindRule(threshold=4.0, min_duration_s=3.0, merge_gap_s=1.0)
    confusion: KindRule = KindRule(threshold=3.0, min_duration_s=4.0, merge_gap_s=3.0)
    delight: KindRule = KindRule(threshold=4.0, min_duration_s=6.0, merge_gap_s=3.0)
    surprise: KindRule = KindRule(threshold=2.5, min_duration_s=6.0, merge_gap_s=3.0)
    # Task markers may overshoot the recording's end by this much (tools round, containers
    # end a frame early) before the row is refused as lying past the end.
    marker_tolerance_s: float = Field(1.0, ge=0)

    def rule(self, kind: str) -> KindRule:
        return getattr(self, kind)
