"""The broken-release scenario's pieces that need no cluster: the commit it makes, the node's
health expression, and what it reads from the kubelet and the HelmRelease. The scenario runs on
the real node in `make e2e-reliability`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from kserve_gitops.base.tools import CommandError
from kserve_gitops.e2e import broken_release, rollout_load
from kserve_gitops.repo import flux as repo_flux
from kserve_gitops.repo import render
from tests import REPO


def _declared_release(env: str) -> dict:
    layer = next(
        lay
        for lay in repo_flux.layers(REPO, env)
        if any(r.name == "sklearn-iris" for r in lay.releases)
    )
    return next(
        o
        for o in render.kustomize_build(REPO, REPO.root / layer.path)
        if o["kind"] == "HelmRelease" and o["metadata"]["name"] == "sklearn-iris"
    )


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_every_environment_declares_health_and_rollback(env: str) -> None:
    """Without the expressions kstatus reads no InferenceService condition and calls it healthy
    at once, so a broken version would never be rolled back."""
    hr = _declared_release(env)
    exprs = {e["kind"]: e for e in hr["spec"]["healthCheckExprs"]}
    isvc = exprs["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert "'Ready'" in isvc["current"] and "'True'" in isvc["current"]
    assert "'Ready'" in isvc["failed"] and "'False'" in isvc["failed"]
    assert broken_release.remediation(hr) == (3, "rollback")


def test_the_node_reads_the_predictor_configuration_in_place_of_ready() -> None:
    exprs = _declared_release("dev")["spec"]["healthCheckExprs"]
    node = broken_release.node_health_checks(exprs)
    (isvc,) = node
    assert "'PredictorConfigurationReady'" in isvc["current"]
    assert "'Ready'" not in isvc["current"]
    assert isvc["failed"] == exprs[0]["failed"]  # a broken version is still Ready=False
    assert exprs[0]["current"].count("'Ready'") == 1  # the declared object is left alone


def test_the_commit_changes_only_the_storage_uri() -> None:
    path = "environments/dev/models/sklearn-iris.yaml"
    text = (REPO.root / path).read_text()
    new_text, old, new = broken_release.break_storage_uri(text, path)
    assert old == "pvc://sklearn-iris-models/v1"
    assert new == f"pvc://sklearn-iris-models/{broken_release.MISSING_VERSION}"
    before, after = yaml.safe_load(text), yaml.safe_load(new_text)
    assert after["model"].pop("storageUri") == new
    before["model"].pop("storageUri")
    assert after == before
    assert new_text.count("\n") == text.count("\n")  # comments kept


def test_a_values_file_without_one_pvc_uri_is_refused() -> None:
    with pytest.raises(broken_release.BrokenReleaseError, match=r"x\.yaml: expected one pvc:"):
        broken_release.break_storage_uri("model:\n  storageUri: s3://bucket/v1\n", "x.yaml")


def test_the_kubelets_reasons_name_the_wait_and_the_last_exit() -> None:
    crashing = {
        "name": "kserve-container",
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
        "lastState": {
            "terminated": {"exitCode": 1, "reason": "Error", "message": "a\nNo model found\n"}
        },
    }
    assert broken_release.container_reason(crashing) == (
        "CrashLoopBackOff; last exit 1 (Error): No model found"
    )
    assert broken_release.container_reason({"state": {"running": {}}, "lastState": {}}) == ""
    starting = {"state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}}
    assert broken_release.container_reason(starting) == ""
    scaled_down = {"state": {}, "lastState": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    assert broken_release.container_reason(scaled_down) == ""


def test_history_and_stalled_read_the_helm_release_status() -> None:
    hr = {
        "status": {
            "history": [
                {"version": 3, "status": "failed", "chartName": "isvc", "chartVersion": "1.0.0"},
                {"version": 2, "status": "deployed", "chartName": "isvc", "chartVersion": "1.0.0"},
            ],
            "conditions": [{"type": "Stalled", "status": "True", "reason": "RetriesExceeded"}],
        }
    }
    assert broken_release.history(hr) == ["v3 failed isvc@1.0.0", "v2 deployed isvc@1.0.0"]
    assert broken_release.stalled(hr)
    assert not broken_release.stalled({"status": {"conditions": []}})


class Events:
    """kubectl's view of the model namespace's events (ClusterPaths.get), and no HelmRelease."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def get(self, kind: str, *rest: str) -> dict:
        if kind == "events":
            return {"items": self.items}
        if kind == "ksvc":
            return {"status": {"traffic": [{"revisionName": "r-00001", "percent": 100}]}}
        if kind == "pods":
            return {"items": []}
        raise CommandError(["kubectl", "get", kind], 1, "NotFound")

    def revision_target(self, rev: str, namespace: str) -> tuple[str, dict]:
        return f"http://{rev}", {}


def test_the_kubelets_warnings_are_this_scenarios_each_said_once() -> None:
    def warning(when: str, message: str) -> dict:
        return {
            "reportingComponent": "kubelet",
            "type": "Warning",
            "reason": "Unhealthy",
            "message": message,
            "lastTimestamp": when,
            "involvedObject": {"kind": "Pod", "name": "p-00002", "fieldPath": "spec.containers{q}"},
        }

    paths = Events(
        [
            warning("2026-12-07T18:59:59Z", "earlier scenario"),
            warning("2026-12-07T19:00:05Z", "HTTP probe failed with statuscode: 503"),
            warning("2026-12-07T19:00:06Z", "connection refused"),
        ]
    )
    scenario = SimpleNamespace(model="m", namespace="models", paths=paths)
    load = SimpleNamespace(started=False)
    router = rollout_load.Router(paths, "models")  # type: ignore[arg-type]
    watch = broken_release.Watch(scenario, load, router, since="2026-12-07T19:00:00Z")  # type: ignore[arg-type]
    for _ in range(3):  # the same events at every poll, alternating messages included
        assert watch.poll("m") is None
    assert watch.kubelet == [
        "pod p-00002 spec.containers{q}: Unhealthy: HTTP probe failed with statuscode: 503",
        "pod p-00002 spec.containers{q}: Unhealthy: connection refused",
    ]
