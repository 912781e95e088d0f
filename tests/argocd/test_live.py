"""`kgops argocd-health` on recorded objects: the rows and table the live command prints, from a
stand-in for the Kubernetes API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kserve_gitops.argocd import live
from kserve_gitops.argocd.health import Verdict
from tests import REPO
from tests.argocd.test_health import CACHE, DATA, load

SCALED = load(DATA / "sklearn-iris-scaled-to-zero.yaml")
KNATIVE = load(CACHE / "serving.knative.dev/Service/testdata/healthy.yaml")
HELM = load(CACHE / "helm.toolkit.fluxcd.io/HelmRelease/testdata/degraded.yaml")


class FakeCustomObjects:
    """Lists recorded objects by plural; Kustomizations' CRD is not installed (404)."""

    def __init__(self) -> None:
        self.objects = {
            "inferenceservices": [SCALED],
            "services": [KNATIVE],
            "helmreleases": [HELM],
        }
        self.calls: list[tuple[str, ...]] = []

    def _list(self, plural: str, namespace: str | None) -> dict[str, Any]:
        if plural == "kustomizations":
            raise ApiException(status=404, reason="Not Found")
        items = self.objects[plural]
        return {"items": [o for o in items if namespace in (None, o["metadata"]["namespace"])]}

    def list_cluster_custom_object(self, group: str, version: str, plural: str) -> Any:
        self.calls.append((group, version, plural))
        return self._list(plural, None)

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str
    ) -> Any:
        self.calls.append((group, version, namespace, plural))
        return self._list(plural, namespace)


def test_rows_of_every_kind_with_both_verdicts() -> None:
    api = FakeCustomObjects()
    found = live.rows(live.live_objects(api), REPO)
    assert [c[2] for c in api.calls] == [r[2] for r in live.RESOURCES]
    assert [(r.kind, r.namespace, r.name, r.upstream.status, r.ours.status) for r in found] == [
        ("HelmRelease", "default", "podinfo", "Degraded", "Degraded"),
        ("InferenceService", "models", "sklearn-iris", "Progressing", "Healthy"),
        ("Service", "default", "helloworld", "Healthy", "Healthy"),
    ]


def test_one_namespace() -> None:
    api = FakeCustomObjects()
    found = live.rows(live.live_objects(api, "models"), REPO)
    assert [r.name for r in found] == ["sklearn-iris"]
    assert {c[2] for c in api.calls} == {"models"}


def test_another_api_error_is_raised() -> None:
    class Forbidden(FakeCustomObjects):
        def _list(self, plural: str, namespace: str | None) -> dict[str, Any]:
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException):
        live.live_objects(Forbidden())


def test_table_puts_argo_cds_verdict_next_to_ours() -> None:
    found = live.rows([SCALED], REPO)
    assert found[0].upstream == Verdict("Progressing", "0: transitionStatus | InProgress")
    assert live.table(found, "v3.5.1").splitlines() == [
        "KIND              NAMESPACE    NAME          ARGO CD v3.5.1    OURS",
        "InferenceService  models       sklearn-iris  Progressing       Healthy",
        "InferenceService models/sklearn-iris (Argo CD): 0: transitionStatus | InProgress",
    ]


def test_command_without_a_cluster_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "kubeconfig"
    assert live.main(["--kubeconfig", str(missing)], REPO) == 1
    assert "error:" in capsys.readouterr().err
