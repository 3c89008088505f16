"""A separate Ray head (``ray start --head`` on 127.0.0.1, its own ports and temp dir, next to
the session's in-process Ray; the ``ray_head`` fixture of tests/infra/conftest.py) runs real
nightly jobs submitted with ``emoray submit`` (Ray's JobSubmissionClient) and with ``ray job
submit``: inputs and outputs on the moto S3 server, the run tracked in a sqlite MLflow store,
logs streamed back, exit code = the job's."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pandas as pd
import pytest
import s3fs
from mlflow.tracking import MlflowClient

from infra.submit import EXCLUDES, runtime_env, submit
from operators import schema as S

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def recordings(media, s3_endpoint):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="submit")
    for case in ("face_speech", "corrupt"):
        client.upload_file(str(media[case]), "submit", f"in/{case}.mp4")
    return "s3://submit/in", "s3://submit/out"


def test_runtime_env_uploads_code_without_bulk():
    env = runtime_env("/repo", {"env_vars": {"A": "1"}, "excludes": ["big/"]})
    assert env["working_dir"] == "/repo" and env["env_vars"] == {"A": "1"}
    assert {".venv", ".git", "data", "mlruns", "tests"} <= set(env["excludes"])
    assert env["excludes"][-1] == "big/" and len(env["excludes"]) == len(EXCLUDES) + 1


def test_nightly_job_on_a_separate_ray_head(ray_local, ray_head, recordings, s3_endpoint,
                                            tmp_path):
    import ray

    # The session's in-process Ray is untouched by the second head.
    session_gcs = ray.get_runtime_context().gcs_address
    assert ray.is_initialized()
    source, out = recordings
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["nightly", "--input", source, "--out", out, "--tracking-uri", tracking,
            "--set", f"storage.endpoint_url={s3_endpoint}"]
    logs = io.StringIO()
    # No CPUs reserved for the driver: on this 2-CPU head the pipeline's actors need them all.
    code = submit(ray_head, args, env=runtime_env(str(ROOT)), out=logs)
    text = logs.getvalue()
    assert code == 0, text
    assert "nightly: 2 processed (new=2)" in text
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    clips = pd.read_parquet("submit/out/clips", filesystem=fs)
    assert sorted(clips[S.STATUS]) == ["decode_error", "ok"]
    runs = MlflowClient(tracking).search_runs(
        [MlflowClient(tracking).get_experiment_by_name("nightly").experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["clips_processed"] == 2
    assert runs[0].info.run_id == clips[S.RUN_ID].iloc[0]

    # The same through the plain Ray CLI, with the installed `emoray` as the entrypoint.
    result = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir",
         str(ROOT), "--runtime-env-json", f'{{"excludes": {list(EXCLUDES)!r}}}'.replace(
             "'", '"'), "--", "emoray", "nightly", "--input", source, "--out", out,
         "--dry-run", "--set", f"storage.endpoint_url={s3_endpoint}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "would process 0 recording(s); 2 up to date" in result.stdout

    # A job that fails reports its driver's exit code (2: bad input).
    logs = io.StringIO()
    code = submit(ray_head, ["nightly", "--input", "s3://submit/nothing-here", "--out", out,
                             "--set", f"storage.endpoint_url={s3_endpoint}"],
                  env=runtime_env(str(ROOT)), out=logs)
    assert code == 2, logs.getvalue()
    assert "does not exist" in logs.getvalue() or "no recordings" in logs.getvalue()
    assert ray.get_runtime_context().gcs_address == session_gcs
