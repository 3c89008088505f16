"""Tune the moment rules on half of the planted sessions and measure them on the other half.

Usage::

    python -m pipelines.sample_media.planted /tmp/emoray-planted --sessions 20
    emoray run /tmp/emoray-planted --out /tmp/emoray-planted-out
    python -m pipelines.findings.evaluate /tmp/emoray-planted /tmp/emoray-planted-out

Reads the written timelines (pure pandas, no Ray) and ``planted.json``; sessions with an even
number tune, odd ones test.  Moments are found exactly as the job's findings step finds them
(``operators.findings``; the tuning grid does not move the baselines, so they are computed
once), with the ``baseline`` task of each session's sidecar markers.

A moment **matches** a planted segment when they overlap by at least half of the shorter of
the two and have the same polarity (:data:`POLARITY`).  Recall: planted segments matched;
precision: moments that match one; false moments per neutral minute: moments matching none,
per minute of the sessions outside planted segments.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from infra.logs import setup_logging
from operators import schema as S
from operators.findings.baseline import add_baseline
from operators.findings.config import FindingsConfig, KindRule
from operators.findings.moments import find_moments
from pipelines.sample_media.planted import Session, load_truth

logger = logging.getLogger("emoray.findings")

POLARITY = {"frustration": "negative", "confusion": "negative", "delight": "positive",
            "surprise": "surprise"}
"""Moment kind → polarity."""
PLANTED_POLARITY = {"angry": ("negative",), "disgust": ("negative",), "sad": ("negative",),
                    "happy": ("positive",), "surprise": ("surprise",),
                    "fear": ("surprise", "negative")}
"""Planted expression → the polarities a moment may have to match it.  Fear is planted as
the surprise kind but is a negative state (circumplex valence −0.64): a negative moment on
it is not a false one."""

GRID = {
    "valence_shift": (0.5, 1.0, 1.5, 2.0),
    "emotion_rise": (1.0, 1.5, 2.0, 3.0),
    "arousal_rise": (0.0, 0.5),
    "threshold": (1.5, 2.0, 3.0),
    "min_duration_s": (2.0, 3.0, 4.0),
    "merge_gap_s": (1.0, 2.0, 3.0),
    "smooth_s": (0.0, 2.0, 3.0),
}
"""The first tuning grid; threshold, minimum duration and merge gap are shared by the kinds.
Then each kind's own threshold, minimum duration and merge gap are tuned in turn
(:data:`KIND_GRID`), the others held."""
KIND_GRID = {"threshold": (1.5, 2.0, 2.5, 3.0, 4.0), "min_duration_s": (2.0, 3.0, 4.0, 6.0),
             "merge_gap_s": (1.0, 2.0, 3.0)}


def config_for(point: dict[str, float]) -> FindingsConfig:
    rule = KindRule(threshold=point["threshold"], min_duration_s=point["min_duration_s"],
                    merge_gap_s=point["merge_gap_s"])
    return FindingsConfig(valence_shift=point["valence_shift"],
                          emotion_rise=point["emotion_rise"],
                          arousal_rise=point["arousal_rise"], smooth_s=point["smooth_s"],
                          **{kind: rule for kind in S.MOMENT_KINDS})


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def matches(moment: tuple[float, float], polarity: str, planted: tuple[float, float],
            polarities: tuple[str, ...]) -> bool:
    """Overlap of at least half the shorter span, and a polarity the planted one allows."""
    shorter = min(moment[1] - moment[0], planted[1] - planted[0])
    return polarity in polarities and _overlap(moment, planted) >= 0.5 * shorter


def score_session(session: Session, moments: pd.DataFrame) -> dict[str, float]:
    """Counts of one session: planted, matched planted, moments, matched moments, neutral
    minutes."""
    planted = [((s.start_s, s.end_s), PLANTED_POLARITY[s.emotion]) for s in session.segments]
    spans = [((m.start_s, m.end_s), POLARITY[m.kind]) for m in moments.itertuples()]
    return {
        "planted": len(planted),
        "found": sum(any(matches(m, mp, p, pp) for m, mp in spans) for p, pp in planted),
        "moments": len(spans),
        "true": sum(any(matches(m, mp, p, pp) for p, pp in planted) for m, mp in spans),
        "neutral_min": session.neutral_s / 60,
    }


def figures(counts: list[dict[str, float]]) -> dict[str, float]:
    total = pd.DataFrame(counts).sum()
    false = total["moments"] - total["true"]
    return {"recall": total["found"] / total["planted"] if total["planted"] else 0.0,
            "precision": total["true"] / total["moments"] if total["moments"] else 0.0,
            "false_per_neutral_min": false / total["neutral_min"],
            "planted": int(total["planted"]), "moments": int(total["moments"])}


def participant_timelines(sessions: list[Session], out: Path) -> dict[str, pd.DataFrame]:
    """Session name → the participant's timeline (track 0) as written by the job."""
    frames = {}
    for path in sorted((out / "timelines").glob("*.parquet")):
        table = pd.read_parquet(path)
        name = Path(table[S.URI].iloc[0]).stem
        frames[name] = table[table[S.TRACK_ID] == 0].reset_index(drop=True)
    missing = [s.name for s in sessions if s.name not in frames]
    if missing:
        raise FileNotFoundError(f"no timeline for {missing} in {out}/timelines")
    return frames


def with_baselines(sessions: list[Session], timelines: dict[str, pd.DataFrame],
                   config: FindingsConfig) -> dict[str, tuple[pd.DataFrame, set]]:
    """Each session's timeline with its ``*_z`` columns (baseline: the ``baseline`` task),
    and the tracks that have a baseline: computed once, the rules then run per grid point."""
    out = {}
    for session in sessions:
        span = next((t[1:] for t in session.tasks if t[0] == config.baseline_task), None)
        frame, baselines = add_baseline(timelines[session.name], config, span)
        out[session.name] = frame, {k for k, b in baselines.items() if b.median is not None}
    return out


def evaluate(sessions: list[Session], prepared: dict[str, tuple[pd.DataFrame, set]],
             config: FindingsConfig) -> dict[str, float]:
    counts = []
    for session in sessions:
        frame, tracks = prepared[session.name]
        found = find_moments(frame, config, tracks)
        moments = pd.DataFrame([m.__dict__ for m in found],
                               columns=["track_id", "kind", "start_s", "end_s"])
        counts.append(score_session(session, moments))
    return figures(counts)


def _objective(got: dict[str, float], max_false_per_min: float) -> tuple:
    f1 = (2 * got["recall"] * got["precision"] / (got["recall"] + got["precision"])
          if got["recall"] + got["precision"] else 0.0)
    return got["false_per_neutral_min"] <= max_false_per_min, round(f1, 4), got["recall"]


def tune(sessions: list[Session], prepared: dict[str, tuple[pd.DataFrame, set]],
         max_false_per_min: float = 0.5) -> tuple[FindingsConfig, dict[str, float]]:
    """The config with the best F1 among those within ``max_false_per_min`` false moments
    per neutral minute (else the best F1 overall), and its figures: the shared grid, then
    each kind's rule in turn."""
    best, best_key = None, None
    names = list(GRID)
    for values in itertools.product(*GRID.values()):
        config = config_for(dict(zip(names, values, strict=True)))
        got = evaluate(sessions, prepared, config)
        key = _objective(got, max_false_per_min)
        if best_key is None or key > best_key:
            best, best_key = (config, got), key
    for kind in S.MOMENT_KINDS:
        for values in itertools.product(*KIND_GRID.values()):
            rule = KindRule(**dict(zip(KIND_GRID, values, strict=True)))
            config = best[0].model_copy(update={kind: rule})
            got = evaluate(sessions, prepared, config)
            key = _objective(got, max_false_per_min)
            if key > best_key:
                best, best_key = (config, got), key
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.findings.evaluate",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sessions", type=Path, help="folder with planted.json")
    parser.add_argument("out", type=Path, help="the job's output folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    setup_logging()
    sessions = load_truth(args.sessions)
    timelines = participant_timelines(sessions, args.out)
    tuning = [s for i, s in enumerate(sessions) if i % 2 == 0]
    testing = [s for i, s in enumerate(sessions) if i % 2 == 1]
    prepared = with_baselines(sessions, timelines, FindingsConfig())
    config, tuned = tune(tuning, prepared)
    default = evaluate(testing, prepared, FindingsConfig())
    tested = evaluate(testing, prepared, config)
    report = {"tuned": config.model_dump(), "tuning_half": tuned, "test_half": tested,
              "test_half_with_defaults": default,
              "tuning_seeds": [s.seed for s in tuning], "test_seeds": [s.seed for s in testing]}
    logger.info("%s", json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
