"""``emoray nightly --input IN --out OUT``: process only what is new since the last run.

A recording is processed when it has no record in ``OUT/_state`` (new), its bytes changed
(S3 ETag/size, local size/mtime), the models changed (``model_identity``), or its last
status was a transient failure (``nightly.retry_statuses``).  One run at a time holds the
output's lease.  Each run is an MLflow run in experiment ``nightly`` (see
``infra/dashboards.py``).  Also runnable as ``python -m pipelines.nightly``.

Exit codes: 0 done (or nothing to do), 2 bad input or config, 3 another run holds the lease,
4 the output is not writable, stopped being writable or its lease was lost during the run,
5 object storage does not answer or refuses the credentials, 6 MLflow does not answer,
7 the Ray cluster does not answer, 1 anything else (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime

from pipelines.emotion_timeline.config import cli_overrides
from pipelines.nightly.config import load_nightly_config
from pipelines.nightly.job import NightlyResult, run
from pipelines.runner import command_main

logger = logging.getLogger("emoray.nightly")


def _iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder, glob, s3://bucket/prefix or "
                                                       "manifest (as for emoray run)")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix")
    parser.add_argument("--since", type=_iso, help="only recordings modified at or after "
                        "this ISO time (UTC unless it has an offset), e.g. 2026-11-21T00:00")
    parser.add_argument("--limit", type=int, help="process at most N recordings (oldest "
                                                  "first); the next run takes the rest")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be processed and why; change nothing")
    parser.add_argument("--config", help="YAML config (the timeline job's keys + nightly.*)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, as "
                                          "set by `ray job submit`, else a local Ray)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI")


def print_plan(result: NightlyResult) -> None:
    plan = result.plan
    print(f"would process {len(plan.selected)} recording(s); {plan.up_to_date} up to date, "
          f"{len(plan.deferred)} beyond --limit, {plan.before_since} before --since")
    for item in plan.selected:
        print(f"  {item.reason:<17} {item.recording.ref.uri}  ({item.detail})")
    for item in plan.deferred:
        print(f"  {'deferred':<17} {item.recording.ref.uri}  ({item.reason}: beyond --limit)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the job; failures raise (``run_command`` turns them into exit codes)."""
    overrides = cli_overrides(args, {"address": "address", "tracking_uri": "tracking.uri"})
    if args.limit is not None and args.limit < 0:
        logger.error("--limit must be >= 0")
        return 2
    config = load_nightly_config(args.config, overrides)
    result = run(args.input, args.out, config, since=args.since, limit=args.limit,
                 dry_run=args.dry_run)
    if args.dry_run:
        print_plan(result)
        return 0
    logger.info("%s", result.summary_line())
    if result.run_id:
        logger.info("MLflow run %s (experiment %s)", result.run_id, config.tracking.experiment)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("emoray nightly", __doc__, add_arguments, run_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
