"""The nightly RayJob (infra/kuberay/rayjob.yaml) run the way KubeRay 1.6 runs it: the submitter
pod's command built as KubeRay builds it and its environment resolved from the manifest against
configmap.yaml's keys (tests/fixtures/kuberay_submitter.py), executed against a separate
``ray start --head`` started with the head pod's environment, recordings on the loopback S3
server.  The configured input prefix must be what the nightly job processes."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pandas as pd
import pytest
import s3fs
import yaml
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

from operators import schema as S
from tests.fixtures.kuberay_submitter import (
    MissingConfigError,
    resolve_env,
    submitter_command,
    submitter_container,
    submitter_env,
)

KUBERAY = Path(__file__).resolve().parents[2] / "infra" / "kuberay"
VENV_BIN = Path(sys.executable).parent
BUCKET = "kuberay"


def _manifest(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


RAYJOB = _manifest("rayjob.yaml")
CONFIGMAP = _manifest("configmap.yaml")
CONFIG_NAME = CONFIGMAP["metadata"]["name"]


def _head_container(rayjob: dict) -> dict:
    return rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


def _entrypoint_variables(rayjob: dict) -> set[str]:
    return set(re.findall(r"\$\{?([A-Za-z_]\w*)", rayjob["spec"]["entrypoint"]))


@pytest.fixture(scope="module")
def secrets() -> dict[str, dict[str, str]]:
    """The ``emoray-s3`` Secret, holding the loopback server's dummy credentials."""
    return {"emoray-s3": {key: os.environ[key]
                          for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}


@pytest.fixture(scope="module")
def config_data(s3_endpoint, tmp_path_factory) -> dict[str, str]:
    """configmap.yaml's keys, every one with a test value: the loopback S3 server, an input
    and an output prefix, a sqlite MLflow store."""
    tracking = tmp_path_factory.mktemp("kuberay-mlflow") / "mlflow.db"
    values = {"MLFLOW_TRACKING_URI": f"sqlite:///{tracking}", "AWS_DEFAULT_REGION": "us-east-1",
              "AWS_ENDPOINT_URL": s3_endpoint, "EMORAY_INPUT": f"s3://{BUCKET}/incoming",
              "EMORAY_OUT": f"s3://{BUCKET}/timelines"}
    # No production value (a real bucket, a real MLflow server) may reach the test.
    assert values.keys() == CONFIGMAP["data"].keys()
    return values


@pytest.fixture(scope="module")
def ray_head_env(config_data, secrets) -> dict[str, str]:
    """The head pod's environment (rayjob.yaml's head container, resolved): the job's driver
    and the pipeline's workers on the local head read S3 settings from it, as in the cluster."""
    return resolve_env(_head_container(RAYJOB), {CONFIG_NAME: config_data}, secrets)


def test_command_is_kuberays_own():
    """The expected command of KubeRay's TestGetSubmitterTemplate (ray-operator/controllers/
    ray/rayjob_controller_test.go) for the same RayJob, but for the dashboard probe in the wait
    loop, whose exact text is KubeRay's own."""
    rayjob = {"spec": {"entrypoint": "echo no quote 'single quote' \"double quote\"",
                       "submitterPodTemplate": {"spec": {"containers": [
                           {"name": "ray-job-submitter", "image": "rayproject/ray:latest"}]}}}}
    *command, bash_script = submitter_command(rayjob, "test-url", "test-job-id")
    assert command == ["/bin/bash", "-ce", "--"]
    wait, _, rest = bash_script.partition(" ; done ; ")
    assert wait.startswith("until ") and wait.endswith(
        ' >/dev/null 2>&1 ; do echo "Waiting for Ray Dashboard GCS to become healthy at '
        'http://test-url ..." ; sleep 2')
    assert rest == ("if ! ray job status --address http://test-url test-job-id >/dev/null 2>&1 ;"
                    " then ray job submit --address http://test-url --no-wait --submission-id "
                    "test-job-id -- echo no quote 'single quote' \"double quote\" ; fi ; "
                    "ray job logs --address http://test-url --follow test-job-id")
    # A container that brings its own command keeps it.
    rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["command"] = ["true"]
    assert submitter_command(rayjob, "test-url", "test-job-id") == ["true"]
    # A field that would change the command and is not emulated is refused, not ignored.
    rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"][0].pop("command")
    rayjob["spec"]["runtimeEnvYAML"] = "env_vars: {A: '1'}"
    with pytest.raises(NotImplementedError, match="runtimeEnvYAML"):
        submitter_command(rayjob, "test-url", "test-job-id")


def test_every_entrypoint_variable_reaches_the_submitter(secrets):
    """The shipped manifests give the submitter pod every variable the entrypoint expands,
    non-empty; the head's environment does not count (KubeRay expands it in the submitter)."""
    variables = _entrypoint_variables(RAYJOB)
    assert {"EMORAY_INPUT", "EMORAY_OUT", "MLFLOW_TRACKING_URI"} <= variables
    env = submitter_env(RAYJOB, {CONFIG_NAME: CONFIGMAP["data"]}, secrets, "head:8265", "id")
    assert all(env.get(name) for name in variables), {n: env.get(n) for n in variables}
    # The submitter needs no S3 credentials: it only talks to the head's dashboard.
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & env.keys()
    # Without its own env (KubeRay's default submitter) the variables would be unset.
    bare = copy.deepcopy(RAYJOB)
    del bare["spec"]["submitterPodTemplate"]
    assert submitter_container(bare)["image"] == _head_container(RAYJOB)["image"]
    env = submitter_env(bare, {CONFIG_NAME: CONFIGMAP["data"]}, secrets, "head:8265", "id")
    assert not variables & env.keys()


def test_a_missing_configmap_key_is_named(secrets):
    data = {key: value for key, value in CONFIGMAP["data"].items() if key != "EMORAY_OUT"}
    with pytest.raises(MissingConfigError) as missing:
        resolve_env(submitter_container(RAYJOB), {CONFIG_NAME: data}, secrets)
    message = str(missing.value)
    assert "'EMORAY_OUT'" in message and f"ConfigMap {CONFIG_NAME!r}" in message
    assert "'ray-job-submitter'" in message
    with pytest.raises(MissingConfigError, match=r"Secret 'emoray-s3', which does not exist"):
        resolve_env(_head_container(RAYJOB), {CONFIG_NAME: CONFIGMAP["data"]}, {})
    with pytest.raises(MissingConfigError, match=f"ConfigMap {CONFIG_NAME!r}, which does not"):
        resolve_env(_head_container(RAYJOB), {}, secrets)
    # An optional reference to a missing key leaves the variable unset, as the kubelet does.
    container = {"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {
        "name": CONFIG_NAME, "key": "NOPE", "optional": True}}}]}
    assert resolve_env(container, {CONFIG_NAME: data}, {}) == {}


def _run_submitter(env: dict[str, str], rayjob: dict, ray_head: str,
                   job_id: str) -> subprocess.CompletedProcess:
    """The submitter pod's process: KubeRay's command with the pod's environment on top of
    what the image provides (PATH with ray, emoray and python3; HOME) and the cluster's Ray
    auth mode; nothing else of the test process leaks in."""
    base = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ["HOME"],
            "LANG": "C.UTF-8"}
    if "RAY_AUTH_MODE" in os.environ:
        base["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
    dashboard = ray_head.removeprefix("http://")
    return subprocess.run(submitter_command(rayjob, dashboard, job_id), env={**base, **env},
                          capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.integration
def test_nightly_rayjob_processes_the_configured_prefix(ray_head, config_data, secrets, media,
                                                         s3_endpoint):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(media["face_speech"]), BUCKET, "incoming/face_speech.mp4")
    # Outside the configured prefix: processed only if the input were resolved wrongly.
    client.upload_file(str(media["face_speech"]), BUCKET, "elsewhere/decoy.mp4")
    dashboard = ray_head.removeprefix("http://")
    jobs = JobSubmissionClient(ray_head)

    job_id = "emoray-nightly-test-ok"
    env = submitter_env(RAYJOB, {CONFIG_NAME: config_data}, secrets, dashboard, job_id)
    done = _run_submitter(env, RAYJOB, ray_head, job_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert jobs.get_job_status(job_id) == JobStatus.SUCCEEDED, jobs.get_job_logs(job_id)
    assert "nightly: 1 processed (new=1)" in done.stdout, done.stdout

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    clips = pd.read_parquet(f"{BUCKET}/timelines/clips", filesystem=fs)
    assert clips[S.URI].tolist() == [f"{config_data['EMORAY_INPUT']}/face_speech.mp4"]
    assert clips[S.STATUS].tolist() == ["ok"]
    # The tracking URI came from the ConfigMap through the submitter's command line.
    tracking = MlflowClient(config_data["MLFLOW_TRACKING_URI"])
    runs = tracking.search_runs([tracking.get_experiment_by_name("nightly").experiment_id])
    assert [run.info.run_id for run in runs] == clips[S.RUN_ID].unique().tolist()

    # The RayJob as first shipped: a submitter without the ConfigMap's variables.  The
    # entrypoint's `:?` stops the submission, naming the variable, before any job is created.
    bare = copy.deepcopy(RAYJOB)
    bare["spec"]["submitterPodTemplate"]["spec"]["containers"][0].pop("env")
    job_id = "emoray-nightly-test-unset"
    env = submitter_env(bare, {CONFIG_NAME: config_data}, secrets, dashboard, job_id)
    refused = _run_submitter(env, bare, ray_head, job_id)
    assert refused.returncode != 0
    assert "EMORAY_INPUT" in refused.stderr, refused.stderr
    assert job_id not in {job.submission_id for job in jobs.list_jobs()}
