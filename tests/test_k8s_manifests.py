"""deploy/k8s: every manifest valid against the Kubernetes schemas (kubernetes-validate), and
holding what the README promises: API replicas without the worker, probes on /healthz and
/readyz, workers that stand by, secrets from a Secret, the image's non-root user, a migrate Job."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.forms import load_forms
from app.settings import Settings
from tests.test_dockerfile import DOCKERFILE, env_of, final_stage, parse_dockerfile

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
# Oldest and newest Kubernetes releases the manifests are checked against.
VERSIONS = ("1.29.0", "1.33.0")
SECRET_SETTINGS = {"B24_WEBHOOK_URL", "ADMIN_TOKEN", "DATABASE_URL"}


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def one(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(doc: dict[str, Any]) -> dict[str, Any]:
    [only] = doc["spec"]["template"]["spec"]["containers"]
    return only


def test_every_file_in_the_folder_is_listed_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schema(version: str) -> None:
    for doc in documents():
        # strict: an unknown or misspelt field is an error, not silently dropped by the API.
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_refuses_a_misspelt_field() -> None:
    api = one("Deployment", "b24-form-gateway-api")
    broken = yaml.safe_load(yaml.safe_dump(api))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_api_replicas_do_not_deliver_and_are_probed_on_healthz_and_readyz() -> None:
    api = container(one("Deployment", "b24-form-gateway-api"))
    assert api["args"] == ["b24-form-gateway", "serve"]
    assert {"name": "WORKER", "value": "false"} in api["env"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    [port] = api["ports"]
    config = one("ConfigMap", "b24-form-gateway")["data"]
    assert port["containerPort"] == int(config["PORT"])
    assert config["HOST"] == "0.0.0.0"
    service = one("Service", "b24-form-gateway")
    assert (
        service["spec"]["selector"]
        == one("Deployment", "b24-form-gateway-api")["spec"]["selector"]["matchLabels"]
    )


def test_workers_run_the_worker_command_with_a_standby() -> None:
    worker = one("Deployment", "b24-form-gateway-worker")
    assert worker["spec"]["replicas"] >= 2
    assert container(worker)["args"] == ["b24-form-gateway", "worker"]
    assert "ports" not in container(worker)


def test_the_migrate_job_migrates_then_checks() -> None:
    job = container(one("Job", "b24-form-gateway-migrate"))
    script = job["command"][-1]
    assert [shlex.split(part) for part in script.split("&&")] == [
        ["b24-form-gateway", "migrate"],
        ["b24-form-gateway", "check"],
    ]


def test_secrets_come_from_the_secret_and_every_name_is_a_setting() -> None:
    config = one("ConfigMap", "b24-form-gateway")["data"]
    secret = one("Secret", "b24-form-gateway")["stringData"]
    assert set(secret) >= SECRET_SETTINGS
    assert not SECRET_SETTINGS & set(config)
    settings = set(Settings.model_fields)
    assert set(secret) <= settings
    assert set(config) - {"forms.toml"} <= settings
    for kind, name in [
        ("Deployment", "b24-form-gateway-api"),
        ("Deployment", "b24-form-gateway-worker"),
        ("Job", "b24-form-gateway-migrate"),
    ]:
        sources = container(one(kind, name))["envFrom"]
        assert {"secretRef": {"name": "b24-form-gateway"}} in sources
        assert {"configMapRef": {"name": "b24-form-gateway"}} in sources


def test_the_forms_file_is_mounted_where_forms_file_points(tmp_path: Path) -> None:
    config = one("ConfigMap", "b24-form-gateway")["data"]
    mount_dir = str(Path(config["FORMS_FILE"]).parent)
    for kind, name in [
        ("Deployment", "b24-form-gateway-api"),
        ("Deployment", "b24-form-gateway-worker"),
        ("Job", "b24-form-gateway-migrate"),
    ]:
        mounts = {m["name"]: m["mountPath"] for m in container(one(kind, name))["volumeMounts"]}
        assert mounts["forms"] == mount_dir
    path = tmp_path / "forms.toml"
    path.write_text(config["forms.toml"])
    assert load_forms(path)  # the sample forms file is one the gateway accepts


def test_pods_run_as_the_images_user_without_privileges() -> None:
    image_user = next(
        i.args for i in final_stage(parse_dockerfile(DOCKERFILE.read_text())) if i.keyword == "USER"
    )
    uid, _, gid = image_user.partition(":")
    for doc in documents():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == uid
        assert str(pod["securityContext"]["runAsGroup"]) == gid
        assert pod["automountServiceAccountToken"] is False
        box = container(doc)["securityContext"]
        assert box["allowPrivilegeEscalation"] is False
        assert box["readOnlyRootFilesystem"] is True
        assert box["capabilities"]["drop"] == ["ALL"]
    assert (
        env_of(final_stage(parse_dockerfile(DOCKERFILE.read_text())))["PYTHONDONTWRITEBYTECODE"]
        == "1"
    )


def test_the_ingress_routes_only_the_public_paths() -> None:
    ingress = one("Ingress", "b24-form-gateway")
    [rule] = ingress["spec"]["rules"]
    paths = {p["path"] for p in rule["http"]["paths"]}
    assert paths == {"/forms", "/embed.js", "/admin"}
    assert "/metrics" not in paths
    for path in rule["http"]["paths"]:
        assert path["backend"]["service"]["name"] == "b24-form-gateway"
