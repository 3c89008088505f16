"""``emoray report OUT --out REPORT_DIR [--clip ID ...]``: review sessions in the browser.

Reads a job's output folder or ``s3://`` prefix and writes a static, offline report:
``index.html`` (every session, failed ones with their status and error), one page per
session (the recording in a player, the timeline beneath it on the same time axis, moments
to click), CSV exports per session and ``sessions.xlsx``.  Open ``REPORT_DIR/index.html``
in a browser, or serve the folder from any static host.  The report folder holds the
recordings (copies or web-playable proxies).  Also runnable as ``python -m pipelines.report``.

Exit codes: 0 written (damaged or missing outputs are reported on the pages), 2 no such
output folder or an unknown --clip, 4 the report folder is not writable, 5 object storage
does not answer or refuses the credentials, 1 anything else (``--debug``: the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from infra.storage import StorageConfig
from operators.io.files import is_remote, join
from pipelines.report.build import build_report
from pipelines.runner import command_main

logger = logging.getLogger("emoray.report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the output folder or s3:// prefix of "
                                                   "`emoray run` / `emoray nightly`")
    parser.add_argument("--out", dest="report_dir", required=True, metavar="REPORT_DIR",
                        help="folder (or s3:// prefix) to write the report into")
    parser.add_argument("--clip", dest="clips", action="append", metavar="ID",
                        help="only this clip id (repeatable; default: every clip)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (default: "
                                               "$AWS_ENDPOINT_URL, else AWS)")


def run_from_args(args: argparse.Namespace) -> int:
    """Write the report; failures raise (``run_command`` turns them into exit codes)."""
    options = StorageConfig(endpoint_url=args.endpoint_url).storage_options()
    report_dir = args.report_dir if is_remote(args.report_dir) else str(
        Path(args.report_dir).resolve())
    result = build_report(args.out, report_dir, options, clip_ids=args.clips)
    logger.info("open %s", join(result.report_dir, "index.html"))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("emoray report", __doc__, add_arguments, run_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
