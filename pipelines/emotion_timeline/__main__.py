"""``emoray run INPUT --out OUT``: recordings in, per-clip emotion timelines out (Parquet).

Also runnable as ``python -m pipelines.emotion_timeline``.

Exit codes: 0 done, 2 bad input or config, 4 the output is not writable (or stopped being
writable during the run), 5 object storage does not answer or refuses the credentials,
6 MLflow does not answer, 7 the Ray cluster does not answer, 1 anything else (``--debug``
shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from operators.io.files import is_remote
from operators.io.write_outputs import CLIPS_DIR, TIMELINES_DIR
from pipelines.emotion_timeline.config import cli_overrides, load_config
from pipelines.emotion_timeline.job import run
from pipelines.runner import command_main

logger = logging.getLogger("emoray.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="file, folder, glob, s3://bucket/prefix, or a manifest "
                                      "(.txt/.lst one URI per line, .csv with a 'uri' column)")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix")
    parser.add_argument("--config", help="YAML config (see README)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. "
                        "decode.sample_fps=10 (repeatable)")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: local sqlite "
                                               "in ./mlruns)")
    parser.add_argument("--face-model", help="face model: .pt/TorchScript file or MLflow URI "
                                             "(models:/NAME@ALIAS)")
    parser.add_argument("--fusion", choices=("product", "learnt", "face_only"),
                        help="how face and voice combine (default product: face × voice "
                             "probabilities; learnt needs --set fusion_model=...; face_only "
                             "runs no voice model)")
    parser.add_argument("--tasks", metavar="FILE.csv",
                        help="task markers: a CSV with columns uri,task,start_s,end_s (uri may "
                             "be the file name); <recording>.tasks.csv files next to the "
                             "recordings are read too")
    parser.add_argument("--voice-model", help="voice model: .pt/TorchScript file or MLflow URI "
                                              "(default: the shipped RAVDESS network)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the job; failures raise (``run_command`` turns them into exit codes)."""
    overrides = cli_overrides(args, {
        "address": "address", "tracking_uri": "tracking.uri", "face_model": "face_model",
        "fusion": "fusion", "voice_model": "voice_model", "tasks": "tasks"})
    config = load_config(args.config, overrides)
    result = run(args.input, args.out, config)
    logger.info("%s", result.summary_line())
    out = args.out if is_remote(args.out) else str(Path(args.out).resolve())
    logger.info("timelines: %s/%s/  clips: %s/%s/  (MLflow run %s)", out, TIMELINES_DIR,
                out, CLIPS_DIR, result.run_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("emoray run", __doc__, add_arguments, run_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
