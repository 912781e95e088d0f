"""Fixtures for the in-cluster checks, in the style of KServe's test/e2e: a KServeClient, an
InferenceService fixture that waits for the Ready condition, and one prediction helper with
retries. They run against a cluster `make e2e` left behind:

    make e2e ENV=dev KEEP=1
    KGOPS_E2E_ENV=dev .venv/bin/python -m pytest -m e2e tests/e2e/cluster

KUBECONFIG defaults to the e2e cluster's own file (.cache/e2e/kgops-<env>.kubeconfig);
KSERVE_INGRESS_HOST_PORT (KServe's variable) overrides the ingress address 127.0.0.1:31080.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import pytest

from kserve_gitops.e2e import ingress as routed
from kserve_gitops.e2e.plan import build
from kserve_gitops.e2e.steps import Plan
from kserve_gitops.serving import client
from kserve_gitops.serving.client import Rows
from tests import REPO


@pytest.fixture(scope="session")
def plan() -> Plan:
    return build(REPO, os.environ.get("KGOPS_E2E_ENV", "dev"))


@pytest.fixture(scope="session")
def kubeconfig(plan: Plan) -> str:
    path = os.environ.get("KUBECONFIG") or str(plan.kubeconfig)
    if not os.path.isfile(path):
        pytest.fail(f"no kubeconfig at {path}: run `make e2e ENV={plan.env} KEEP=1` first")
    return path


@pytest.fixture(scope="session")
def kserve_client(kubeconfig: str) -> Any:
    from kserve import KServeClient

    return KServeClient(config_file=kubeconfig, persist_config=False)


@pytest.fixture(scope="session")
def ingress(plan: Plan) -> str:
    host_port = os.environ.get("KSERVE_INGRESS_HOST_PORT")
    return f"http://{host_port}" if host_port else plan.ingress


@pytest.fixture(scope="session")
def isvc(kserve_client: Any, plan: Plan) -> dict[str, Any]:
    """The environment's InferenceService once its Ready condition is True."""
    model = plan.models[0]
    kserve_client.wait_isvc_ready(model, plan.namespace, timeout_seconds=600)
    return kserve_client.get(model, namespace=plan.namespace)


@pytest.fixture(scope="session")
def predict(ingress: str, isvc: dict[str, Any], plan: Plan) -> Callable[[Rows, str], list[Any]]:
    """The one prediction helper: through the Istio ingress, routed by the Host of the
    InferenceService URL, retrying what a just-ready route answers (connection errors, 404,
    429/502/503/504) as the e2e's Predict steps do (kserve_gitops.e2e.ingress)."""
    host = urlparse(isvc["status"]["url"]).netloc
    policy = client.RetryPolicy(retries=8, backoff=0.5, max_backoff=5)

    def send(rows: Rows, protocol: str) -> list[Any]:
        return routed.predict(ingress, plan.models[0], rows, protocol, host, 30, policy)

    return send
