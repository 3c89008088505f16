"""The cluster definitions parse and carry what a deployment needs: KubeRay RayCluster,
RayJob and the nightly CronJob (API version, kind, metadata, image, resources, autoscaling
bounds, S3 credentials from a Secret, MLflow URI from the ConfigMap, an entrypoint running
``emoray nightly``, a valid cron schedule, RayJobs that delete themselves), and Dockerfiles that
copy only existing files.  Every core Kubernetes object, and every pod template inside the
ray.io objects, is validated against Kubernetes' own schema (kubernetes-validate, strict: no
unknown field); every field of the ray.io objects against KubeRay 1.6's API.  That the RayJob
really runs is tests/infra/test_kuberay_submitter.py."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import kubernetes_validate
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


# The Kubernetes minor the manifests are validated against: the kubectl image's (the
# CronJob's), which is to match the cluster's.
K8S_VERSION = "1.35"

# ray.io/v1 fields of KubeRay 1.6: the json tags of the Go types in ray-project/kuberay
# ray-operator/apis/ray/v1/rayjob_types.go (RayJobSpec, SubmitterConfig, DeletionStrategy,
# DeletionPolicy, DeletionRule, DeletionCondition, with their kubebuilder enums) and
# raycluster_types.go (RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions).
# A value is a Python type, the name of another entry, a set (an enum), a one-element list (a
# list of that), POD (a core PodTemplateSpec, validated by kubernetes-validate), META (core
# ObjectMeta, likewise), MAP (map[string]string) or None: a field of the API whose contents are
# not listed here, refused until someone checks them against KubeRay and lists them.
POD, META, MAP = "PodTemplateSpec", "ObjectMeta", "map[string]string"
_POLICIES = {"DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"}
KUBERAY_FIELDS: dict[str, dict[str, object]] = {
    "RayCluster": {"apiVersion": str, "kind": str, "metadata": META, "spec": "RayClusterSpec"},
    "RayJob": {"apiVersion": str, "kind": str, "metadata": META, "spec": "RayJobSpec"},
    "RayJobSpec": {
        "activeDeadlineSeconds": int, "backoffLimit": int, "rayClusterSpec": "RayClusterSpec",
        "submitterPodTemplate": POD, "metadata": MAP, "clusterSelector": MAP,
        "submitterConfig": "SubmitterConfig", "managedBy": str,
        "deletionStrategy": "DeletionStrategy", "entrypoint": str, "runtimeEnvYAML": str,
        "jobId": str, "submissionMode": {"K8sJobMode", "HTTPMode", "InteractiveMode",
                                         "SidecarMode"},
        "entrypointResources": str, "entrypointNumCpus": float, "entrypointNumGpus": float,
        "ttlSecondsAfterFinished": int, "shutdownAfterJobFinishes": bool, "suspend": bool},
    "SubmitterConfig": {"backoffLimit": int},
    "DeletionStrategy": {"onSuccess": "DeletionPolicy", "onFailure": "DeletionPolicy",
                         "deletionRules": ["DeletionRule"]},
    "DeletionPolicy": {"policy": _POLICIES},
    "DeletionRule": {"policy": _POLICIES, "condition": "DeletionCondition"},
    "DeletionCondition": {"jobStatus": {"SUCCEEDED", "FAILED"},
                          "jobDeploymentStatus": {"Failed"}, "ttlSeconds": int},
    "RayClusterSpec": {
        "suspend": bool, "managedBy": str, "autoscalerOptions": "AutoscalerOptions",
        "headServiceAnnotations": MAP, "enableInTreeAutoscaling": bool,
        "gcsFaultToleranceOptions": None, "headGroupSpec": "HeadGroupSpec", "rayVersion": str,
        "workerGroupSpecs": ["WorkerGroupSpec"]},
    "HeadGroupSpec": {"template": POD, "headService": None, "enableIngress": bool,
                      "rayStartParams": MAP, "serviceType": str},
    "WorkerGroupSpec": {
        "suspend": bool, "groupName": str, "replicas": int, "minReplicas": int,
        "maxReplicas": int, "idleTimeoutSeconds": int, "rayStartParams": MAP, "template": POD,
        "scaleStrategy": None, "numOfHosts": int},
    "AutoscalerOptions": {
        "resources": None, "image": str, "imagePullPolicy": {"Always", "IfNotPresent", "Never"},
        "securityContext": None, "idleTimeoutSeconds": int,
        "upscalingMode": {"Default", "Aggressive", "Conservative"}, "version": {"v1", "v2"},
        "env": None, "envFrom": None, "volumeMounts": None},
}
# Fields without `omitempty` in the same Go types.
KUBERAY_REQUIRED = {"RayClusterSpec": {"headGroupSpec"}, "HeadGroupSpec": {"template"},
                    "WorkerGroupSpec": {"groupName", "template"},
                    "DeletionRule": {"policy", "condition"}}


def _kuberay_problems(value, kind, path: str, core: list[tuple[str, str, dict]]) -> list[str]:
    """What in ``value`` is not ``kind`` of KUBERAY_FIELDS; core objects met on the way are
    appended to ``core`` as (path, kind, value) for kubernetes-validate."""
    if isinstance(kind, set):
        return [] if value in kind else [f"{path}: {value!r} is not one of {sorted(kind)}"]
    if kind in (POD, META):
        core.append((path, kind, value))
        return []
    if kind is None:
        return [f"{path}: in KubeRay 1.6's API, but its fields are not listed in this test"]
    if kind == MAP:
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return [] if ok else [f"{path}: not a map of strings"]
    if isinstance(kind, list):
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [p for i, item in enumerate(value)
                for p in _kuberay_problems(item, kind[0], f"{path}[{i}]", core)]
    if isinstance(kind, type):
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        ok = ok or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{path}: {value!r} is not {kind.__name__}"]
    if not isinstance(value, dict):
        return [f"{path}: not an object ({kind})"]
    fields = KUBERAY_FIELDS[kind]
    problems = [f"{path}.{key}: no such field in KubeRay 1.6's {kind}"
                for key in value if key not in fields]
    problems += [f"{path}.{key}: required in {kind}"
                 for key in sorted(KUBERAY_REQUIRED.get(kind, set()) - value.keys())]
    return problems + [p for key, item in value.items() if key in fields
                       for p in _kuberay_problems(item, fields[key], f"{path}.{key}", core)]


def _ray_objects() -> list[tuple[str, dict]]:
    return [(f.name, d) for f in sorted(KUBERAY.glob("*.yaml")) for d in _docs(f.name)
            if d["apiVersion"].startswith("ray.io/")]


def _core_objects() -> list[tuple[str, dict]]:
    return [(f.name, d) for f in sorted(KUBERAY.glob("*.yaml")) for d in _docs(f.name)
            if not d["apiVersion"].startswith("ray.io/")]


def _as_core_object(kind: str, value: dict) -> dict:
    """A pod template or object metadata embedded in a ray.io object, wrapped in the smallest
    core object that holds it, so Kubernetes' schema can check it."""
    if kind == POD:
        return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                "template": value}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": value}


def _validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


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
    (submitter,) = spec["submitterPodTemplate"]["spec"]["containers"]
    # KubeRay sets the submitter's command itself only when the template has none.
    assert "command" not in submitter and "args" not in submitter
    from_config = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in submitter["env"]}
    config = _by_kind("ConfigMap")
    for flag, var in (("--input", "EMORAY_INPUT"), ("--out", "EMORAY_OUT"),
                      ("--tracking-uri", "MLFLOW_TRACKING_URI")):
        # Expanded by the submitter's shell, which stops on an empty value (`:?`).
        assert words[words.index(flag) + 1] == f"${{{var}:?}}"
        assert from_config[var] == {"name": config["metadata"]["name"], "key": var}
        assert var in config["data"]
    assert spec["activeDeadlineSeconds"] > 0


def _condition(rule: dict) -> tuple[str, str] | None:
    """A deletion rule's trigger, e.g. ("jobStatus", "SUCCEEDED"); None unless exactly one."""
    condition = [(k, v) for k, v in rule["condition"].items() if k != "ttlSeconds"]
    return condition[0] if len(condition) == 1 else None


def _deletion_rule_errors(spec: dict) -> list[str]:
    """KubeRay 1.6's checks of deletionRules (ray-operator/controllers/ray/utils/validation.go,
    validateDeletionConfiguration and validateDeletionRules), which it applies only when the
    RayJob is reconciled, then fails it."""
    rules = spec.get("deletionStrategy", {}).get("deletionRules", [])
    errors = []
    if rules and spec.get("shutdownAfterJobFinishes"):
        errors.append("shutdownAfterJobFinishes and deletionRules are mutually exclusive")
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
        errors.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
    ttls: dict[tuple[str, str], dict[str, int]] = {}
    for i, rule in enumerate(rules):
        condition = _condition(rule)
        if condition is None:
            errors.append(f"rule {i}: exactly one of jobStatus and jobDeploymentStatus")
            continue
        if rule["policy"] in {"DeleteCluster", "DeleteWorkers"} and spec.get("clusterSelector"):
            errors.append(f"rule {i}: {rule['policy']} with a clusterSelector")
        if rule["policy"] == "DeleteWorkers" and spec.get("rayClusterSpec", {}).get(
                "enableInTreeAutoscaling"):
            errors.append(f"rule {i}: DeleteWorkers with autoscaling")
        by_policy = ttls.setdefault(condition, {})
        if rule["policy"] in by_policy:
            errors.append(f"rule {i}: duplicate {rule['policy']} for {condition}")
        by_policy[rule["policy"]] = rule["condition"].get("ttlSeconds", 0)
    for condition, by_policy in ttls.items():
        order = [by_policy[p] for p in ("DeleteWorkers", "DeleteCluster", "DeleteSelf")
                 if p in by_policy]
        if order != sorted(order):
            errors.append(f"{condition}: TTLs must grow DeleteWorkers <= DeleteCluster <= "
                          "DeleteSelf")
    return errors


def test_rayjobs_delete_their_cluster_and_themselves_however_they_end():
    spec = _by_kind("RayJob")["spec"]
    assert _deletion_rule_errors(spec) == []
    rules = {(_condition(r), r["policy"]): r["condition"].get("ttlSeconds", 0)
             for r in spec["deletionStrategy"]["deletionRules"]}
    # A finished job, and a failed deployment (activeDeadlineSeconds, a failed submission),
    # after which jobStatus is not terminal: no way of ending leaves a cluster or a RayJob.
    for condition in (("jobStatus", "SUCCEEDED"), ("jobStatus", "FAILED"),
                      ("jobDeploymentStatus", "Failed")):
        assert rules[condition, "DeleteCluster"] <= 3600, condition
        assert 0 < rules[condition, "DeleteSelf"] <= 14 * 86400, condition
    # The checks themselves catch what KubeRay refuses.
    for broken in ({"shutdownAfterJobFinishes": True},
                   {"clusterSelector": {"ray.io/cluster": "emoray"}}):
        assert _deletion_rule_errors({**spec, **broken})
    swapped = copy.deepcopy(spec)
    swapped["deletionStrategy"]["deletionRules"][0]["condition"]["ttlSeconds"] = 10**6
    assert _deletion_rule_errors(swapped) == [
        "('jobStatus', 'SUCCEEDED'): TTLs must grow DeleteWorkers <= DeleteCluster <= DeleteSelf"]


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
    # The Kubernetes project's distroless kubectl (no shell: kubectl is the command), its
    # minor the one the manifests are validated against.
    image = re.fullmatch(r"registry\.k8s\.io/kubectl:v(\d+\.\d+)\.\d+", container["image"])
    assert image and image[1] == K8S_VERSION, container["image"]
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


@pytest.mark.parametrize(("name", "kind"), [(name, doc["kind"]) for name, doc in _core_objects()])
def test_core_objects_match_the_kubernetes_schema(name, kind):
    (doc,) = [d for n, d in _core_objects() if n == name and d["kind"] == kind]
    _validate(doc)


def test_ray_objects_use_only_kuberay_fields_and_valid_pod_templates():
    """Every field of the RayCluster and the RayJob is one of KubeRay 1.6's (KUBERAY_FIELDS),
    and every pod template and metadata block in them passes Kubernetes' schema."""
    objects = _ray_objects()
    assert sorted(doc["kind"] for _, doc in objects) == ["RayCluster", "RayJob"]
    for name, doc in objects:
        core: list[tuple[str, str, dict]] = []
        assert _kuberay_problems(doc, doc["kind"], name, core) == []
        # head + workers (+ the submitter) templates, and the object's own metadata
        assert len([c for c in core if c[1] == POD]) >= 2
        for path, kind, value in core:
            try:
                _validate(_as_core_object(kind, value))
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{path}: {error.message} at {list(error.path)}")


def test_manifest_checks_catch_mistakes():
    """The two checks above fail on what they are there for: a misspelt KubeRay field, a
    field the list does not cover, a bad enum value, a misspelt field in a pod template."""
    rayjob = copy.deepcopy(_by_kind("RayJob"))
    rayjob["spec"]["ttlSecondsAfterFinish"] = 60
    rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["headService"] = {}
    rayjob["spec"]["deletionStrategy"]["deletionRules"][0]["policy"] = "DeleteAll"
    assert _kuberay_problems(rayjob, "RayJob", "rayjob", []) == [
        "rayjob.spec.ttlSecondsAfterFinish: no such field in KubeRay 1.6's RayJobSpec",
        "rayjob.spec.deletionStrategy.deletionRules[0].policy: 'DeleteAll' is not one of "
        "['DeleteCluster', 'DeleteNone', 'DeleteSelf', 'DeleteWorkers']",
        "rayjob.spec.rayClusterSpec.headGroupSpec.headService: in KubeRay 1.6's API, but its "
        "fields are not listed in this test"]
    template = copy.deepcopy(rayjob["spec"]["submitterPodTemplate"])
    template["spec"]["containers"][0]["envFrom"] = [{"configMapref": {"name": "x"}}]
    with pytest.raises(kubernetes_validate.ValidationError, match="configMapref"):
        _validate(_as_core_object(POD, template))


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
