"""``emoray sample DIR``: write the sample recordings (and their ground truth) into DIR.

Also runnable as ``python -m pipelines.sample_media``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from infra.logs import setup_logging
from pipelines.sample_media.build import CASES, make_sample_media, make_webcam_recording

logger = logging.getLogger("emoray.sample")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emoray sample", description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cases", help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--recording", type=float, metavar="SECONDS",
                        help="also write webcam_recording.mp4 of this length (benchmarks)")
    args = parser.parse_args(argv)
    setup_logging()
    cases = args.cases.split(",") if args.cases else None
    written = make_sample_media(args.out_dir, cases)
    if args.recording:
        written["webcam_recording"] = make_webcam_recording(
            args.out_dir / "webcam_recording.mp4", args.recording)
    logger.info("%d sample recording(s) in %s (ground truth: cases.json)", len(written),
                args.out_dir.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
