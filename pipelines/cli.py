"""The ``emoray`` command: one subcommand per job."""

from __future__ import annotations

import argparse
import sys

from infra import submit as submit_cmd
from infra.logs import setup_logging
from pipelines.emotion_timeline import __main__ as timeline_job
from pipelines.nightly import __main__ as nightly_job
from pipelines.report import __main__ as report_job
from pipelines.runner import add_debug_argument, run_command
from pipelines.sample_media import __main__ as sample_job
from pipelines.train_model import __main__ as train_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="emoray", description="Emotion timelines from usability-test recordings, on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="recordings -> per-clip emotion timelines (Parquet)",
                         description=timeline_job.__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    timeline_job.add_arguments(run)
    sample = sub.add_parser("sample", help="generate sample recordings (real faces, "
                                           "synthetic speech) into a folder")
    sample.add_argument("argv", nargs=argparse.REMAINDER,
                        help="arguments of python -m pipelines.sample_media")
    nightly = sub.add_parser("nightly", help="process only recordings new or changed since the "
                                             "last run (incremental, one run at a time)",
                             description=nightly_job.__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    nightly_job.add_arguments(nightly)
    report = sub.add_parser("report", help="review sessions in the browser: an index, one page "
                                           "per session (video + timeline), exports",
                            description=report_job.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    report_job.add_arguments(report)
    submit = sub.add_parser("submit", help="run an emoray job on a Ray cluster (Jobs API) and "
                                           "stream its logs", description=submit_cmd.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    submit_cmd.add_arguments(submit)
    handlers = {"run": timeline_job.run_from_args, "nightly": nightly_job.run_from_args,
                "submit": submit_cmd.run_from_args, "report": report_job.run_from_args}
    for name, (add_arguments, handler, help_text) in train_job.COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=train_job.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter))
        handlers[name] = handler
    for name, subparser in sub.choices.items():
        if name != "sample":  # its arguments all go to the sample generator
            add_debug_argument(subparser)
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "sample":
        return sample_job.main(args.argv)
    return run_command(handlers[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
