"""Write the sample recordings and their ground truth (``cases.json``) into a folder.

Usage: ``python -m pipelines.sample_media OUT_DIR [--cases a,b] [--recording SECONDS]
[--pip-recording SECONDS]`` (also ``emoray sample OUT_DIR ...``).  Cases already built by the
same code and tools are kept; see ``pipelines/sample_media/build.py`` for what each case is.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from infra.logs import setup_logging
from pipelines.sample_media.build import (
    CASES,
    make_pip_recording,
    make_sample_media,
    make_webcam_recording,
)

logger = logging.getLogger("emoray.sample")


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), write the files, return the exit status.

    Exit status 0 when everything was written, 2 for bad arguments (argparse's convention,
    including an unknown case name).  Tool failures raise (a missing ffmpeg or espeak-ng is
    named in the error).
    """
    parser = argparse.ArgumentParser(prog="emoray sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="folder to write into (created if missing)")
    parser.add_argument("--cases", help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--recording", type=float, metavar="SECONDS",
                        help="also write webcam_recording.mp4 of this length (benchmarks)")
    parser.add_argument("--pip-recording", type=float, metavar="SECONDS",
                        help="also write pip_recording.mp4 (webcam inset over a screen)")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    unknown = sorted(set(cases or ()) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}")
    setup_logging()
    written = make_sample_media(args.out_dir, cases)
    if args.recording:
        written["webcam_recording"] = make_webcam_recording(
            args.out_dir / "webcam_recording.mp4", args.recording)
    if args.pip_recording:
        written["pip_recording"] = make_pip_recording(
            args.out_dir / "pip_recording.mp4", args.pip_recording)
    for name, path in written.items():
        logger.info("%-18s %s", name, path.resolve())
    logger.info("%d file(s) in %s; ground truth of the cases: %s", len(written),
                args.out_dir.resolve(), (args.out_dir / "cases.json").resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
