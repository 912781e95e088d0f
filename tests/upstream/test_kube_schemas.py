"""Strict schema checks: unknown fields and unknown kinds are errors, never skipped."""

from __future__ import annotations

import pytest

from kserve_gitops.upstream import kube_schemas
from tests import REPO

ISVC = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "sklearn-iris"},
    "spec": {
        "predictor": {
            "minReplicas": 1,
            "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://m/v1"},
        }
    },
}


def test_valid_inference_service_passes() -> None:
    assert kube_schemas.check(REPO, ISVC) == []


def test_unknown_field_deep_in_crd_is_named_with_its_path() -> None:
    body = {**ISVC, "spec": {"predictor": {**ISVC["spec"]["predictor"], "replicas": 3}}}
    [v] = kube_schemas.check(REPO, body)
    assert v.path == "spec.predictor" and "'replicas' was unexpected" in v.message


def test_metadata_of_custom_resources_is_checked_as_object_meta() -> None:
    body = {**ISVC, "metadata": {"name": "x", "labels": {"team": 7}}}
    [v] = kube_schemas.check(REPO, body)
    assert v.path == "metadata.labels.team"


def test_all_errors_are_reported_not_just_the_first() -> None:
    body = {**ISVC, "metadata": {"name": "x", "nme": "y"}, "spek": {}}
    assert {v.path for v in kube_schemas.check(REPO, body)} == {"", "metadata"}


def test_builtin_kinds_use_kubernetes_strict_schemas() -> None:
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "i:1", "cpu": 1}]}},
        },
    }
    [v] = kube_schemas.check(REPO, deploy)
    assert v.path == "spec.template.spec.containers.0" and "'cpu' was unexpected" in v.message


def test_preserve_unknown_fields_stays_open() -> None:
    hr = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "r"},
        "spec": {
            "interval": "10m",
            "chart": {"spec": {"chart": "c", "sourceRef": {"kind": "HelmRepository", "name": "s"}}},
            "values": {"anything": {"goes": True}},
        },
    }
    assert kube_schemas.check(REPO, hr) == []


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("serving.kserve.io/v1beta1", "InferenceServis"), ("example.com/v1", "Widget")],
)
def test_kind_without_schema_is_an_error(api_version: str, kind: str) -> None:
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
    with pytest.raises(kube_schemas.SchemaNotFound, match=kind) as err:
        kube_schemas.check(REPO, body)
    assert f"Kubernetes {REPO.kubernetes_version} built-in kind" in str(err.value)
