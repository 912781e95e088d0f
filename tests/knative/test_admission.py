"""What Knative and KServe make of an InferenceService: the pod fields Knative's webhook admits
under an environment's features, the revision pod (queue-proxy, storage-initializer) and its
QoS class; and the policies (`kgops policy`, and so `make validate`) failing with file, field
and the feature or setting to change."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kserve_gitops.checks import pods, policy, revisions
from kserve_gitops.knative import admission, revision
from kserve_gitops.repo import render
from kserve_gitops.repo.render import Obj
from tests import REPO
from tests.broken_copy import edit, run_policy

PROD_VALUES = "environments/prod/models/sklearn-iris.yaml"
STAGING_VALUES = "environments/staging/models/sklearn-iris.yaml"
# The Knative Serving module the tables come from: the one versions.yaml pins (the kwok e2e runs).
SERVING = f"knative.dev/serving@{REPO.versions['localCluster']['knativeServing']}"


def _go_source(rel: str) -> Path | None:
    try:
        cache = subprocess.run(
            ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return None
    path = Path(cache or os.path.expanduser("~/go/pkg/mod")) / SERVING / rel
    return path if path.is_file() else None


def test_the_tables_are_knatives_own() -> None:
    """Re-derive the pod-field -> feature table from fieldmask.go and features.go of the pinned
    Knative Serving (skipped where `go mod download` of that module was not run)."""
    mask, flags = (
        _go_source("pkg/apis/serving/fieldmask.go"),
        _go_source("pkg/apis/config/features.go"),
    )
    if not (mask and flags):
        pytest.skip(f"{SERVING} is not in the Go module cache")
    names = dict(re.findall(r"(Feature\w+)\s*=\s*\"([^\"]+)\"", flags.read_text()))
    by_field = dict(re.findall(r"asFlag\((Feature\w+), &nc\.(\w+)\)", flags.read_text()))
    feature_of = {struct: names[const] for const, struct in by_field.items()}
    body = mask.read_text().split("func PodSpecMask", 1)[1].split("\nfunc ", 1)[0]
    gated = re.findall(
        r"if cfg\.Features\.(\w+) != config\.Disabled \{\n\s*out\.(\w+) = in\.\w+", body
    )
    # Go field names (DNSPolicy, HostIPC) against JSON names (dnsPolicy, hostIPC): case-blind.
    derived = {field.lower(): feature_of[flag] for flag, field in gated}
    # securityContext has its own mask (PodSecurityContextMask), secure-pod-defaults included.
    assert derived.pop("securitycontext") == admission.POD_SECURITY_CONTEXT
    assert derived == {k.lower(): v for k, v in admission.POD_FIELD_FEATURES.items()}
    always = re.findall(r"^\s*out\.(\w+) = in\.\w+$", body.split("// Feature fields")[0], re.M)
    # automountServiceAccountToken: kept only when false (refusals() checks the value).
    assert {a[0].lower() + a[1:] for a in always} == {
        *admission.ALWAYS_ALLOWED,
        "automountServiceAccountToken",
    }
    psc = mask.read_text().split("func PodSecurityContextMask", 1)[1].split("\nfunc ", 1)[0]
    tail = psc.split("PodSpecSecurityContext == config.Disabled", 1)[1].split("// Disallowed")[0]
    kept = re.findall(r"out\.(\w+) = in\.\w+", tail)
    assert {k.lower() for k in kept} == {f.lower() for f in admission.POD_SECURITY_CONTEXT_FIELDS}


def _refused(predictor: dict[str, Any], flags: dict[str, str]) -> set[tuple[str, str]]:
    return {(r.path, r.feature) for r in admission.refusals(REPO, predictor, flags)}


def test_pod_fields_need_their_feature() -> None:
    predictor = {
        "minReplicas": 1,
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "imagePullSecrets": [{"name": "pull"}],
        "serviceAccountName": "reader",
        "model": {"env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]},
    }
    assert _refused(predictor, {}) == {
        ("nodeSelector", "kubernetes.podspec-nodeselector"),
        ("tolerations", "kubernetes.podspec-tolerations"),
        ("model.env.0.valueFrom.fieldRef", "kubernetes.podspec-fieldref"),
    }
    on = {
        "kubernetes.podspec-nodeselector": "enabled",
        "kubernetes.podspec-tolerations": "allowed",
        "kubernetes.podspec-fieldref": "Enabled",
    }
    assert _refused(predictor, on) == set()
    assert ("restartPolicy", "") in _refused({"restartPolicy": "Never"}, on)


def test_pod_security_context_needs_secure_defaults_or_the_securitycontext_feature() -> None:
    seccomp = {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}
    assert _refused(seccomp, {}) == {
        (
            "securityContext.seccompProfile",
            "secure-pod-defaults or kubernetes.podspec-securitycontext",
        )
    }
    assert _refused(seccomp, {"secure-pod-defaults": "enabled"}) == set()
    run_as = {"securityContext": {"runAsUser": 1000, "seccompProfile": {"type": "Localhost"}}}
    assert _refused(run_as, {"secure-pod-defaults": "enabled"}) == {
        ("securityContext.runAsUser", "kubernetes.podspec-securitycontext"),
        ("securityContext.seccompProfile.type", "kubernetes.podspec-securitycontext"),
    }
    assert _refused(run_as, {"kubernetes.podspec-securitycontext": "enabled"}) == set()
    assert _refused(
        {"securityContext": {"sysctls": []}}, {"kubernetes.podspec-securitycontext": "enabled"}
    ) == {("securityContext.sysctls", "")}


@pytest.fixture(scope="module")
def prod_objects() -> list[Obj]:
    return render.environment_objects(REPO, "prod")


def test_the_revision_pod_of_prod_is_restricted_and_guaranteed(prod_objects: list[Obj]) -> None:
    _isvc, pod = next(revisions.revision_pods(REPO, prod_objects))
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == [revision.MODEL_CONTAINER, revision.QUEUE_PROXY]
    assert "initContainers" not in pod["spec"]  # pvc:// is mounted, nothing is downloaded
    queue = pod["spec"]["containers"][1]
    assert queue["resources"]["requests"] == queue["resources"]["limits"]
    assert all(not revision.guaranteed_gaps(c["resources"]) for c in pod["spec"]["containers"])
    assert pod["spec"]["priorityClassName"] == "model-serving"


def test_a_downloaded_model_gets_the_storage_initializer_of_the_environment() -> None:
    isvc = {
        "metadata": {"name": "m", "namespace": "models"},
        "spec": {"predictor": {"model": {"storageUri": "s3://bucket/m/v1"}}},
    }
    values = {"kserve": {"storage": {"containerSecurityContext": {"runAsNonRoot": False}}}}
    pod = revision.pod(REPO, isvc, {}, values)
    (init,) = pod["spec"]["initContainers"]
    assert init["name"] == revision.STORAGE_INITIALIZER
    assert init["securityContext"]["runAsNonRoot"] is False  # the environment's override
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}  # the chart's default
    assert revision.guaranteed_gaps(init["resources"]) == [
        "cpu request 100m != limit 1",
        "memory request 100Mi != limit 1Gi",
    ]
    found = {path for path, _ in pods.check_run_as_non_root(pod, policy.context(REPO, "prod"))}
    assert "spec.initContainers.0.securityContext.runAsNonRoot" in found


def _with_kserve_values(objs: list[Obj], change: Any) -> list[Obj]:
    out = []
    for o in objs:
        body = copy.deepcopy(o.body)
        if o.kind == "ConfigMap" and o.name.startswith("kserve-resources-values"):
            values = yaml.safe_load(body["data"]["values.yaml"])
            change(values)
            body["data"]["values.yaml"] = yaml.safe_dump(values)
        if o.kind == "InferenceService":
            body["spec"]["predictor"]["model"]["storageUri"] = "s3://bucket/sklearn-iris/v1"
        out.append(Obj(o.source, body))
    return out


def test_revision_pod_rules_catch_the_storage_initializer(prod_objects: list[Obj]) -> None:
    def insecure(values: dict[str, Any]) -> None:
        storage = values["kserve"]["storage"]
        storage["containerSecurityContext"]["allowPrivilegeEscalation"] = True
        storage["resources"]["limits"]["cpu"] = "1"

    objs = _with_kserve_values(prod_objects, insecure)
    found = policy.check_objects(objs, policy.context(REPO, "prod"), environment=True)
    by_rule = {(v.rule, v.field): v.message for v in found}
    field = (
        f"{PROD_VALUES}: revision pod of InferenceService/sklearn-iris: "
        "spec.initContainers[storage-initializer].securityContext.allowPrivilegeEscalation"
    )
    assert ("REVISION-PSS", field) in by_rule
    qos = by_rule[
        ("QOS-GUARANTEED", f"{PROD_VALUES}: model.resources (InferenceService/sklearn-iris)")
    ]
    assert "storage-initializer has cpu request 500m != limit 1" in qos
    assert "environments/prod/platform/kserve/values/kserve-resources.yaml" in qos


# --- kgops policy on broken copies --------------------------------------------------------------


STAGING_SERVING = "environments/staging/platform/configs/knative-serving.yaml"
BROKEN = {
    "pod field without its feature": (
        lambda r: edit(
            r / STAGING_VALUES, "predictor:\n", "predictor:\n  nodeSelector:\n    pool: gpu\n"
        ),
        [
            STAGING_VALUES,
            "predictor.nodeSelector",
            "[KNATIVE-FEATURES]",
            "kubernetes.podspec-nodeselector",
            STAGING_SERVING,
        ],
    ),
    "seccomp without secure-pod-defaults": (
        lambda r: edit(
            r / "platform/configs/knative-serving.yaml", "      secure-pod-defaults: enabled\n", ""
        ),
        [
            "environments/dev/models/sklearn-iris.yaml",
            "predictor.securityContext.seccompProfile",
            "secure-pod-defaults or kubernetes.podspec-securitycontext",
        ],
    ),
    "feature no model uses": (
        lambda r: edit(
            r / STAGING_SERVING,
            "kubernetes.podspec-affinity: enabled\n",
            "kubernetes.podspec-affinity: enabled\n      kubernetes.podspec-tolerations: enabled\n",
        ),
        [
            STAGING_SERVING,
            "spec.config.features.kubernetes.podspec-tolerations",
            "no InferenceService",
        ],
    ),
    "Guaranteed promised, queue-proxy without limits": (
        lambda r: edit(
            r / "environments/prod/platform/configs/knative-serving.yaml",
            "      queue-sidecar-cpu-limit: 250m\n",
            "",
        ),
        [
            PROD_VALUES,
            "model.resources",
            "[QOS-GUARANTEED]",
            "queue-proxy has no cpu limit",
            "queue-sidecar-{cpu,memory}-request",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_policy_fails_with_file_field_and_reason(
    case: str, repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    breaker, expected = BROKEN[case]
    breaker(repo_copy)
    run_policy(repo_copy, capsys).assert_fails_with(expected, on_line_with=expected[1])
