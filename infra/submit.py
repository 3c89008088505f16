"""``emoray submit [options] -- JOB ARGS``: run an emoray job on a Ray cluster.

Wraps Ray's Jobs API (``JobSubmissionClient``, the same as ``ray job submit``): the local
checkout is uploaded as the job's working directory (without virtualenvs, data, outputs,
tests and VCS files), the job's driver runs ``python -m pipelines.cli JOB ARGS`` on the head
node, its logs stream here, and the exit code is the job's: the driver's own exit code when
Ray reports it (see the README's "Exit codes": 2 bad input, 3 lease held, 4 output not
writable, …), else 1 for a failed and 130 for a stopped job; 7 when the dashboard does not
answer (checked first, before anything is uploaded).

Cluster nodes need emoray's dependencies (the image in ``infra/docker``) and reach storage
and MLflow with their own environment (a Kubernetes Secret / ConfigMap): credentials are
never put into the runtime environment, which the dashboard shows to anyone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from infra.preflight import PreflightConfig, check_dashboard, run_checks

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Not uploaded (gitignore syntax).  Ray also honours the checkout's .gitignore.
EXCLUDES = [".git", ".venv", "data", "out", "mlruns", "tests", "notebooks", "*.egg-info",
            "__pycache__", ".pytest_cache", ".ruff_cache", "*.mp4", "*.parquet"]
_EXIT_STOPPED = 130


def runtime_env(working_dir: str | None, extra: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The job's runtime env: ``working_dir`` uploaded with :data:`EXCLUDES`, merged with
    ``extra`` (its ``excludes`` are added; other keys override)."""
    env: dict[str, Any] = {}
    if working_dir is not None:
        env = {"working_dir": working_dir, "excludes": list(EXCLUDES)}
    for key, value in (extra or {}).items():
        if key == "excludes":
            env["excludes"] = [*env.get("excludes", []), *value]
        else:
            env[key] = value
    return env


def entrypoint(job_args: list[str]) -> str:
    """Shell command of the job's driver: the uploaded code's CLI (not a stale installed
    copy), with the head node's Python."""
    return shlex.join(["python", "-m", "pipelines.cli", *job_args])


def load_runtime_env(source: str | None) -> dict[str, Any] | None:
    """A runtime env from a YAML/JSON file, or inline JSON."""
    if source is None:
        return None
    path = Path(source)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else (
        json.loads(source))
    if not isinstance(data, dict):
        raise ValueError(f"--runtime-env must be a mapping, got {type(data).__name__}")
    return data


def submit(address: str, job_args: list[str], *, env: dict[str, Any],
           num_cpus: float | None = None, num_gpus: float | None = None, follow: bool = True,
           out: TextIO = sys.stdout) -> int:
    """Submit the job; with ``follow``, stream its logs to ``out`` and return its exit code
    (see module doc); else print the job id and return 0."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=entrypoint(job_args), runtime_env=env or None,
                               entrypoint_num_cpus=num_cpus, entrypoint_num_gpus=num_gpus)
    logger.info("submitted %s to %s: %s", job_id, address, entrypoint(job_args))
    if not follow:
        print(job_id, file=out)
        return 0

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(stream())
    except KeyboardInterrupt:
        logger.warning("stopped following; the job keeps running (ray job stop %s "
                       "--address %s)", job_id, address)
        return _EXIT_STOPPED
    # The log stream ends when the job does; its final status may lag a moment behind.
    deadline = time.monotonic() + 60
    while not (info := client.get_job_info(job_id)).status.is_terminal():
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: logs ended but it is still {info.status}")
        time.sleep(0.5)
    logger.info("job %s %s%s", job_id, info.status,
                f": {info.message}" if info.status != JobStatus.SUCCEEDED else "")
    if info.status == JobStatus.SUCCEEDED:
        return 0
    if info.status == JobStatus.STOPPED:
        return _EXIT_STOPPED
    return info.driver_exit_code or 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", DEFAULT_ADDRESS),
                        help="Ray dashboard URL of the cluster (default: $RAY_ADDRESS or "
                             f"{DEFAULT_ADDRESS})")
    parser.add_argument("--working-dir", default=".",
                        help="code to upload (default: this checkout); 'none' uploads nothing "
                             "and runs the emoray installed in the cluster image")
    parser.add_argument("--runtime-env", help="extra runtime env: YAML/JSON file or inline "
                                              "JSON (env_vars, pip, excludes, …)")
    parser.add_argument("--num-cpus", type=float, help="CPUs reserved for the job's driver")
    parser.add_argument("--num-gpus", type=float, help="GPUs reserved for the job's driver")
    parser.add_argument("--no-wait", action="store_true",
                        help="print the job id and return instead of streaming the logs")
    parser.add_argument("job", nargs=argparse.REMAINDER,
                        help="-- then the emoray subcommand and its arguments, e.g. "
                             "-- nightly --input s3://rec/in --out s3://rec/out")


def run_from_args(args: argparse.Namespace) -> int:
    job_args = list(args.job)
    if job_args[:1] == ["--"]:
        job_args = job_args[1:]
    if not job_args:
        logger.error("nothing to run: give the job after '--', e.g. -- nightly --input … "
                     "--out …")
        return 2
    try:
        extra = load_runtime_env(args.runtime_env)
    except (ValueError, OSError) as exc:
        logger.error("--runtime-env: %s", exc)
        return 2
    working_dir = None if args.working_dir == "none" else str(Path(args.working_dir).resolve())
    # The dashboard must answer before anything is uploaded; the job's own preflight (on the
    # cluster, with the cluster's view of storage and MLflow) checks the rest.
    config = PreflightConfig()
    run_checks([check_dashboard(args.address, config.timeout_s)], config)
    return submit(args.address, job_args, env=runtime_env(working_dir, extra),
                  num_cpus=args.num_cpus, num_gpus=args.num_gpus, follow=not args.no_wait)
