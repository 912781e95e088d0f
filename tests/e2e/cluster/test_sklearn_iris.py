"""In-cluster checks of a `make e2e` cluster (marked e2e: never part of the offline suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kserve_gitops.e2e.golden import predictions
from kserve_gitops.e2e.readiness import SKLEARN_RUNTIME
from kserve_gitops.e2e.steps import HelmInstall, Plan, Poll
from kserve_gitops.repo import render
from tests import REPO

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(kubeconfig: str) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=kubeconfig)


def platform_namespaces(plan: Plan) -> list[str]:
    return sorted({s.namespace for s in plan.steps if isinstance(s, HelmInstall) and s.repository})


def test_platform_deployments_are_available(api: k8s.ApiClient, plan: Plan) -> None:
    apps = k8s.AppsV1Api(api)
    for ns in [*platform_namespaces(plan), "knative-serving"]:
        deployments = apps.list_namespaced_deployment(ns).items
        assert deployments, f"no Deployment in {ns}"
        for d in deployments:
            available = {c.type: c.status for c in d.status.conditions or []}.get("Available")
            assert available == "True", f"{ns}/{d.metadata.name} not Available"


def test_webhooks_and_gateway_have_ready_endpoints(api: k8s.ApiClient, plan: Plan) -> None:
    discovery = k8s.DiscoveryV1Api(api)
    polls = [s for s in plan.steps if isinstance(s, Poll) and s.until == "ready-endpoint"]
    assert polls
    for step in polls:
        ns = step.command[step.command.index("-n") + 1]
        selector = step.command[step.command.index("-l") + 1]
        slices = discovery.list_namespaced_endpoint_slice(ns, label_selector=selector).items
        ready = [
            ep
            for s in slices
            for ep in s.endpoints or []
            if ep.addresses and (ep.conditions is None or ep.conditions.ready is not False)
        ]
        assert ready, step.title


def test_knative_serving_is_ready(api: k8s.ApiClient) -> None:
    ks = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "operator.knative.dev", "v1beta1", "knative-serving", "knativeservings", "knative-serving"
    )
    ready = {c["type"]: c["status"] for c in ks["status"]["conditions"]}.get("Ready")
    assert ready == "True"


def test_sklearn_runtime_is_installed(api: k8s.ApiClient) -> None:
    runtime = k8s.CustomObjectsApi(api).get_cluster_custom_object(
        "serving.kserve.io", "v1alpha1", "clusterservingruntimes", SKLEARN_RUNTIME
    )
    formats = [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
    assert "sklearn" in formats


def test_inference_service_is_ready_on_the_environment_domain(
    isvc: dict[str, Any], plan: Plan
) -> None:
    conditions = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    domain = render.environment(REPO, plan.env)["ingressDomain"]
    assert urlparse(isvc["status"]["url"]).netloc.endswith(f".{domain}")


@pytest.mark.parametrize("protocol", ["v1", "v2"])
@pytest.mark.parametrize(("rows", "expected"), predictions(REPO, "sklearn-iris"))
def test_predictions_through_the_ingress(
    predict: Callable[[Any, str], list[Any]], protocol: str, rows: Any, expected: Any
) -> None:
    assert predict(rows, protocol) == list(expected)


def test_locust_slo_through_the_ingress(
    ingress: str, isvc: dict[str, Any], plan: Plan, tmp_path: Any
) -> None:
    host = urlparse(isvc["status"]["url"]).netloc
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kserve_gitops.load.loadtest",
            "--target",
            ingress,
            "--host-header",
            host,
            "--protocol",
            "v1",
            "--env",
            plan.env,
            "--reports",
            str(REPO.reports),
        ],
        cwd=REPO.root,
        env={**os.environ, "KGOPS_ROOT": str(REPO.root)},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
