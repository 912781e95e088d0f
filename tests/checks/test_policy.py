"""Security policies: every environment and chart scenario passes them, and each rule catches a
violation (a broken object, or a broken copy of the repository run through the CLI)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kserve_gitops.checks import policy
from kserve_gitops.repo import render
from kserve_gitops.repo.render import Obj
from tests import REPO
from tests.broken_copy import run_policy

ENVS = REPO.environment_names


@pytest.fixture(scope="module")
def env_objects() -> dict[str, list[Obj]]:
    return {env: render.environment_objects(REPO, env) for env in ENVS}


@pytest.mark.parametrize("env", ENVS)
def test_every_environment_passes(env_objects: dict[str, list[Obj]], env: str) -> None:
    objs = env_objects[env]
    assert {"InferenceService", "Namespace", "PeerAuthentication", "NetworkPolicy"} <= {
        o.kind for o in objs
    }
    assert policy.check_objects(objs, policy.context(REPO, env), environment=True) == []


def _isvc(objs: list[Obj]) -> dict[str, Any]:
    return copy.deepcopy(next(o.body for o in objs if o.kind == "InferenceService"))


def _with(objs: list[Obj], kind: str, change: Callable[[dict[str, Any]], None]) -> list[Obj]:
    """The environment's objects with every object of `kind` changed in place (a copy)."""
    out = []
    for o in objs:
        body = copy.deepcopy(o.body)
        if o.kind == kind:
            change(body)
        out.append(Obj(o.source, body))
    return out


def _model(body: dict[str, Any]) -> dict[str, Any]:
    return body["spec"]["predictor"]["model"]


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x", "namespace": "models"},
        "spec": {
            "template": {
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "app",
                            "image": "example.com/app:1.2.3",
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "16Mi"},
                                "limits": {"cpu": "10m", "memory": "16Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                }
            }
        },
    }


def _container(body: dict[str, Any]) -> dict[str, Any]:
    return body["spec"]["template"]["spec"]["containers"][0]


# Object rules: (rule, how to break the InferenceService or a Deployment, field reported).
OBJECT_BREAKS: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    (
        "PSS-NONROOT",
        "isvc",
        lambda b: _model(b)["securityContext"].pop("runAsNonRoot"),
        "spec.predictor.model.securityContext.runAsNonRoot",
    ),
    (
        "PSS-NONROOT",
        "pod",
        lambda b: _container(b).setdefault("securityContext", {}).update(runAsUser=0),
        "spec.template.spec.containers.0.securityContext.runAsUser",
    ),
    (
        "PSS-PRIV-ESC",
        "isvc",
        lambda b: _model(b)["securityContext"].update(allowPrivilegeEscalation=True),
        "spec.predictor.model.securityContext.allowPrivilegeEscalation",
    ),
    (
        "PSS-PRIV-ESC",
        "pod",
        lambda b: _container(b)["securityContext"].update(privileged=True),
        "spec.template.spec.containers.0.securityContext.privileged",
    ),
    (
        "PSS-CAPS",
        "isvc",
        lambda b: _model(b)["securityContext"].pop("capabilities"),
        "spec.predictor.model.securityContext.capabilities.drop",
    ),
    (
        "PSS-CAPS",
        "pod",
        lambda b: _container(b)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        "spec.template.spec.containers.0.securityContext.capabilities.add",
    ),
    (
        "PSS-SECCOMP",
        "isvc",
        lambda b: (
            _model(b)["securityContext"].pop("seccompProfile"),
            b["spec"]["predictor"].pop("securityContext"),
        ),
        "spec.predictor.model.securityContext.seccompProfile.type",
    ),
    (
        "PSS-HOST",
        "pod",
        lambda b: b["spec"]["template"]["spec"].update(hostNetwork=True),
        "spec.template.spec.hostNetwork",
    ),
    (
        "PSS-HOST",
        "pod",
        lambda b: b["spec"]["template"]["spec"].update(
            volumes=[{"name": "h", "hostPath": {"path": "/"}}]
        ),
        "spec.template.spec.volumes.0.hostPath",
    ),
    (
        "RO-ROOTFS",
        "isvc",
        lambda b: _model(b)["securityContext"].update(readOnlyRootFilesystem=False),
        "spec.predictor.model.securityContext.readOnlyRootFilesystem",
    ),
    (
        "RESOURCES",
        "isvc",
        lambda b: _model(b)["resources"]["limits"].pop("memory"),
        "spec.predictor.model.resources.limits.memory",
    ),
    (
        "RESOURCES",
        "pod",
        lambda b: _container(b).pop("resources"),
        "spec.template.spec.containers.0.resources.requests.cpu",
    ),
    (
        "IMAGE-PINNED",
        "pod",
        lambda b: _container(b).update(image="example.com/app:latest"),
        "spec.template.spec.containers.0.image",
    ),
    (
        "IMAGE-PINNED",
        "pod",
        lambda b: _container(b).update(image="example.com/app"),
        "spec.template.spec.containers.0.image",
    ),
    (
        "CREDS-BY-REF",
        "isvc",
        lambda b: _model(b).update(env=[{"name": "AWS_SECRET_ACCESS_KEY", "value": "literal"}]),
        "spec.predictor.model.env.0.value",
    ),
]


@pytest.mark.parametrize(
    ("rule", "target", "breaks", "field"),
    OBJECT_BREAKS,
    ids=[f"{r}-{t}-{i}" for i, (r, t, _b, _f) in enumerate(OBJECT_BREAKS)],
)
def test_object_rule_catches_a_violation(
    env_objects: dict[str, list[Obj]],
    rule: str,
    target: str,
    breaks: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    body = _isvc(env_objects["prod"]) if target == "isvc" else _pod()
    ctx = policy.context(REPO, "prod")
    intact = policy.check_objects([Obj("test", copy.deepcopy(body))], ctx, environment=False)
    assert intact == []
    breaks(body)
    found = policy.check_objects([Obj("test", body)], ctx, environment=False)
    assert (rule, field) in {(v.rule, v.field) for v in found}, found


def test_digest_pinned_image_passes() -> None:
    body = _pod()
    _container(body)["image"] = "example.com/app@sha256:" + "a" * 64
    ctx = policy.context(REPO, "dev")
    assert policy.check_objects([Obj("t", body)], ctx, environment=False) == []


def test_secret_with_a_credential_is_caught() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "models"},
        "stringData": {"AWS_SECRET_ACCESS_KEY": "x"},
    }
    found = policy.check_objects([Obj("t", secret)], policy.context(REPO, "dev"), environment=False)
    assert [(v.rule, v.field) for v in found] == [
        ("SECRET-LITERAL", "stringData.AWS_SECRET_ACCESS_KEY")
    ]


def _drop_labels(b: dict[str, Any]) -> None:
    if b["metadata"]["name"] == "models":
        b["metadata"]["labels"].pop("pod-security.kubernetes.io/enforce")


def _no_strict(b: dict[str, Any]) -> None:
    b["spec"]["mtls"]["mode"] = "PERMISSIVE"


def _open_authz(b: dict[str, Any]) -> None:
    b["spec"]["rules"].append({"to": [{"operation": {"ports": ["8080"]}}]})


def _foreign_principal(b: dict[str, Any]) -> None:
    b["spec"]["rules"][0]["from"][0]["source"]["principals"].append(
        "cluster.local/ns/default/sa/default"
    )


def _no_activator(b: dict[str, Any]) -> None:
    b["spec"]["rules"][0]["from"][0]["source"]["principals"].remove(
        "cluster.local/ns/knative-serving/sa/activator"
    )


def _no_default_deny(b: dict[str, Any]) -> None:
    if b["metadata"]["name"] == "default-deny-ingress":
        b["spec"]["podSelector"] = {"matchLabels": {"a": "b"}}


def _foreign_namespace(b: dict[str, Any]) -> None:
    if b["metadata"]["name"] == "predictors-allow-callers":
        peer = b["spec"]["ingress"][0]["from"][0]
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] = "default"


def _open_port(b: dict[str, Any]) -> None:
    if b["metadata"]["name"] == "predictors-allow-callers":
        b["spec"]["ingress"][0].pop("ports")


ENV_BREAKS = [
    (
        "NS-RESTRICTED",
        "Namespace",
        _drop_labels,
        "metadata.labels.pod-security.kubernetes.io/enforce",
    ),
    ("MTLS-STRICT", "PeerAuthentication", _no_strict, "PeerAuthentication in models"),
    (
        "AUTHZ-CALLERS",
        "AuthorizationPolicy",
        _open_authz,
        "AuthorizationPolicy/predictors-allow-callers.spec.rules.3.from",
    ),
    (
        "AUTHZ-CALLERS",
        "AuthorizationPolicy",
        _foreign_principal,
        "AuthorizationPolicy/predictors-allow-callers.spec.rules.0.from.0.source.principals",
    ),
    ("AUTHZ-CALLERS", "AuthorizationPolicy", _no_activator, "AuthorizationPolicy in models"),
    ("NETPOL", "NetworkPolicy", _no_default_deny, "NetworkPolicy in models"),
    (
        "NETPOL",
        "NetworkPolicy",
        _foreign_namespace,
        "NetworkPolicy/predictors-allow-callers.spec.ingress.0.from.0",
    ),
    (
        "NETPOL",
        "NetworkPolicy",
        _open_port,
        "NetworkPolicy/predictors-allow-callers.spec.ingress.0.ports",
    ),
]


@pytest.mark.parametrize(("rule", "kind", "breaks", "field"), ENV_BREAKS)
def test_environment_rule_catches_a_violation(
    env_objects: dict[str, list[Obj]],
    rule: str,
    kind: str,
    breaks: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    objs = _with(env_objects["staging"], kind, breaks)
    found = policy.check_objects(objs, policy.context(REPO, "staging"), environment=True)
    assert (rule, field) in {(v.rule, v.field) for v in found}, found


def test_undeclared_model_namespace_is_caught(env_objects: dict[str, list[Obj]]) -> None:
    objs = [o for o in env_objects["dev"] if not (o.kind == "Namespace" and o.name == "models")]
    found = policy.check_objects(objs, policy.context(REPO, "dev"), environment=True)
    assert ("NS-DECLARED", "Namespace/models") in {(v.rule, v.field) for v in found}


def test_every_rule_has_a_violation_test() -> None:
    tested = {r for r, *_ in OBJECT_BREAKS} | {r for r, *_ in ENV_BREAKS}
    tested |= {"SECRET-LITERAL", "NS-DECLARED"}
    # tests/knative/test_admission.py breaks each of these (objects and repository copies).
    tested |= {"KNATIVE-FEATURES", "REVISION-PSS", "QOS-GUARANTEED"}
    tested |= {"STORAGE-PROVIDED"}  # tests/checks/test_model_storage.py
    tested |= {"MESH-ENFORCED"}  # tests/checks/test_mesh.py
    assert tested == {rule.id for rule in policy.RULES}


# --- the CLI on broken repository copies ------------------------------------------------------


def test_cli_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    """Every environment, every chart scenario and the credential scan."""
    proc = run_policy(REPO.root, capsys)
    assert proc.code == 0, proc.stderr
    scope = ", ".join(ENVS) + " + chart scenarios"
    assert f"0 policy violation(s) in {scope} and the repository scan" in proc.stdout


def test_cli_names_file_object_and_field(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = repo_copy / "environments/prod/models/sklearn-iris.yaml"
    values.write_text(
        values.read_text().replace(
            "model:\n", "model:\n  env:\n    - name: API_TOKEN\n      value: literal-token\n", 1
        )
    )
    proc = run_policy(repo_copy, capsys, "--env", "prod")
    assert proc.code == 1
    assert (
        "environments/prod/models/sklearn-iris.yaml -> inference-service/templates/"
        "inferenceservice.yaml: InferenceService/sklearn-iris: spec.predictor.model.env.0.value: "
        "[CREDS-BY-REF]"
    ) in proc.stderr


def test_rules_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    proc = run_policy(REPO.root, capsys, "--rules")
    assert proc.code == 0
    for rule in policy.RULES:
        assert rule.id in proc.stdout
