"""The cluster definitions parse and carry what a deployment needs: KubeRay RayCluster,
RayJob and the nightly CronJob (API version, kind, metadata, image, resources, autoscaling
bounds, S3 credentials from a Secret, MLflow URI from the ConfigMap, an entrypoint running
``emoray nightly``, a valid cron schedule), and Dockerfiles that copy only existing files."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "infra" / "kuberay"
DOCKER = ROOT / "infra" / "docker"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]


def _by_kind(kind: str) -> dict:
    found = [d for f in sorted(KUBERAY.glob("*.yaml")) for d in _docs(f.name)
             if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_specs(ray_spec: dict) -> list[tuple[str, dict, dict]]:
    groups = [("head", ray_spec["headGroupSpec"], ray_spec["headGroupSpec"]["template"])]
    groups += [(g["groupName"], g, g["template"]) for g in ray_spec.get("workerGroupSpecs", [])]
    return [(name, group, template["spec"]) for name, group, template in groups]


def test_every_manifest_has_api_version_kind_and_metadata():
    files = sorted(KUBERAY.glob("*.yaml"))
    assert {f.name for f in files} >= {"raycluster.yaml", "rayjob.yaml",
                                       "nightly-cronjob.yaml", "configmap.yaml"}
    for f in files:
        for doc in _docs(f.name):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f.name
            assert doc["metadata"].get("name") or doc["metadata"].get("generateName")


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_ray_pods_have_image_resources_secret_credentials_and_config(kind):
    doc = _by_kind(kind)
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == "2.60.0"  # the pinned Ray of pyproject.toml
    assert "ray[data,train,default]==2.60.0" in (ROOT / "pyproject.toml").read_text()
    assert spec["enableInTreeAutoscaling"] is True
    for name, group, pod in _pod_specs(spec):
        if name != "head":
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in pod["containers"]:
            assert re.fullmatch(r"[\w./-]+/emoray:(cpu|gpu)", container["image"])
            res = container["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"]
            assert res["limits"]["memory"] == res["requests"]["memory"]
            secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
                       if "secretKeyRef" in e.get("valueFrom", {})}
            assert set(secrets) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
            assert all(ref["name"] == "emoray-s3" for ref in secrets.values())
            assert {"configMapRef": {"name": "emoray-config"}} in container["envFrom"]
            if "nvidia.com/gpu" in res["limits"]:
                assert container["image"].endswith(":gpu")


def test_configmap_carries_the_mlflow_uri_and_no_credentials():
    data = _by_kind("ConfigMap")["data"]
    assert data["MLFLOW_TRACKING_URI"].startswith("http")
    assert not any("SECRET" in key or "ACCESS_KEY" in key for key in data)


def test_rayjob_runs_emoray_nightly_with_the_configured_locations():
    spec = _by_kind("RayJob")["spec"]
    words = shlex.split(spec["entrypoint"])
    assert words[:2] == ["emoray", "nightly"]
    for flag, var in (("--input", "$EMORAY_INPUT"), ("--out", "$EMORAY_OUT"),
                      ("--tracking-uri", "$MLFLOW_TRACKING_URI")):
        assert words[words.index(flag) + 1] == var
        assert var[1:] in _by_kind("ConfigMap")["data"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["activeDeadlineSeconds"] > 0


_CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def _valid_cron_field(field: str, low: int, high: int) -> bool:
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        bounds = base.split("-")
        if not all(b.isdigit() and low <= int(b) <= high for b in bounds) or len(bounds) > 2:
            return False
    return True


def test_cronjob_creates_the_rayjob_on_a_valid_schedule():
    cron = _by_kind("CronJob")
    fields = cron["spec"]["schedule"].split()
    assert len(fields) == 5
    assert all(_valid_cron_field(f, lo, hi) for f, (lo, hi) in zip(fields, _CRON_RANGES,
                                                                     strict=True))
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["kubectl", "create", "-f"]
    assert container["resources"]["limits"]
    template = next(v for v in pod["volumes"] if v["name"] == "template")
    assert container["command"][3].startswith(
        next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "template"))
    assert template["configMap"]["name"] == "emoray-rayjob-template"
    # The service account may create RayJobs, and only that.
    role = _by_kind("Role")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                              "verbs": ["create", "get", "list"]}]
    assert pod["serviceAccountName"] == _by_kind("ServiceAccount")["metadata"]["name"]


def test_cron_validator_rejects_bad_fields():
    assert not _valid_cron_field("61", 0, 59) and not _valid_cron_field("*/0", 0, 59)
    assert _valid_cron_field("*/15", 0, 59) and _valid_cron_field("1-5,7", 0, 7)


def test_dockerfiles_copy_existing_files_and_put_the_venv_on_path():
    cpu = (DOCKER / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+)$", cpu, flags=re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert "bash infra/install.sh" in cpu
    assert re.search(r"PATH=/opt/emoray/\.venv/bin:\$PATH", cpu)
    for tool in ("ffmpeg", "espeak-ng", "sox", "wget"):
        assert tool in cpu
    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    assert re.search(r"^FROM \$\{BASE\}", gpu, flags=re.MULTILINE)
    assert "NVIDIA_VISIBLE_DEVICES" in gpu
    assert "torch==2.11.0" in (ROOT / "pyproject.toml").read_text()
