"""Breakages only a real API server sees, each made in a repository copy and applied to one
kwok cluster (real etcd, kube-apiserver, kube-controller-manager, kube-scheduler) started for
this module. Each must fail naming the object, the field or policy, and the server's message."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.e2e.executor import Executor
from kserve_gitops.e2e.provider import KwokCluster, run_env
from kserve_gitops.e2e.steps import Apply, HelmInstall, Plan
from kserve_gitops.localcluster import binaries, controlplane
from kserve_gitops.repo import flux, render
from kserve_gitops.upstream import charts as upstream_charts
from tests import REPO
from tests.kwok_helpers import need_binaries

pytestmark = pytest.mark.kwok


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    need_binaries(lambda: binaries.locate(binaries.pinned(REPO)))
    report = tmp_path_factory.mktemp("kwok-breakage")
    lines: list[str] = []
    cluster = KwokCluster(REPO, "breakage", lines.append)
    bins = cluster.prepare()
    kubeconfig = controlplane.kubeconfig_file(REPO, "breakage")
    runner = Runner(report / "commands.log", lines.append, run_env(kubeconfig, bins), REPO.root)
    plan = Plan(REPO, "breakage", "kgops-breakage", kubeconfig, "models", "", (), "kwok")
    cluster.start(runner)
    try:
        yield Executor(plan, runner, report, lines.append, kwok=cluster)
    finally:
        cluster.stop(keep=False)


def release(chart: str) -> tuple[str, flux.Release]:
    """(layer, release) of an upstream chart in dev, as Flux declares it."""
    for lay in flux.layers(REPO, "dev"):
        for rel in lay.releases:
            if rel.chart == chart:
                return lay.name, rel
    raise AssertionError(f"dev installs no chart {chart}")


def configs(root: Path, *kinds: str) -> Apply:
    """The objects of `kinds` of the copy's dev configs layer, as `kustomize build` makes them."""
    objs = render.kustomize_build(REPO, root / "environments" / "dev" / "platform" / "configs")
    return Apply("platform-configs", "test", "test", tuple(o for o in objs if o["kind"] in kinds))


def helm_install(layer_name: str, rel: flux.Release, values: dict[str, Any]) -> HelmInstall:
    chart = REPO.rel(upstream_charts.chart_dir(REPO, rel.chart, rel.version))
    return HelmInstall(
        layer_name,
        rel.name,
        chart,
        None,
        None,
        rel.namespace,
        values=values,
        values_source=rel.values_file or "",
        timeout="2m",
    )


def deployment(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "models"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def findings_for(executor: Executor, ref: str, timeout_s: float = 30) -> list[str]:
    """The cluster check's findings about `ref` once the controllers have acted on it."""
    assert executor.kwok is not None
    deadline = time.monotonic() + timeout_s
    while True:
        found = [str(f) for f in executor.kwok.check(executor.runner) if ref in f.ref]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_restricted_pod_security_refuses_a_pod_in_models(executor: Executor, repo_copy: Path):
    # The models namespace as the environment declares it (restricted), and a workload added to
    # the copy's configs layer whose pod escalates privileges.
    broken = deployment(
        "privileged",
        {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox@sha256:" + "0" * 64,
                    "securityContext": {"privileged": True},
                }
            ]
        },
    )
    executor.execute(configs(repo_copy, "Namespace"))
    executor.execute(Apply("platform-configs", "broken", "test", (broken,)))
    found = findings_for(executor, "models/privileged")
    assert any(
        f.startswith("Deployment/models/privileged: status.availableReplicas: 0/1: ")
        and 'violates PodSecurity "restricted:' in f
        and 'container "c" must not set securityContext.privileged=true' in f
        for f in found
    ), "\n".join(found)


def test_a_workload_with_an_undeclared_service_account_is_refused(
    executor: Executor, repo_copy: Path
):
    pod = {
        "serviceAccountName": "nobody-declares-me",
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "c",
                "image": "busybox@sha256:" + "0" * 64,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    executor.execute(configs(repo_copy, "Namespace"))
    executor.execute(Apply("platform-configs", "broken", "test", (deployment("ghost-sa", pod),)))
    found = findings_for(executor, "models/ghost-sa")
    assert any('serviceaccount "nobody-declares-me" not found' in f for f in found), found


def test_a_custom_resource_violating_a_cel_rule_of_its_crd_is_refused(
    executor: Executor, repo_copy: Path
):
    crds_layer, istio_base = release("base")  # Istio's CRDs, with their CEL rules
    executor.execute(helm_install(crds_layer, istio_base, istio_base.values))
    policy = repo_copy / "platform" / "security" / "peerauthentication.yaml"
    doc = yaml.safe_load(policy.read_text())
    doc["spec"]["selector"] = {"matchLabels": {"app": "*"}}  # the CRD's CEL rule forbids it
    policy.write_text(yaml.safe_dump(doc))
    with pytest.raises(CommandError) as err:
        executor.execute(configs(repo_copy, "Namespace", "PeerAuthentication"))
    message = str(err.value)
    assert 'PeerAuthentication "default" is invalid' in message
    assert "spec.selector.matchLabels" in message
    assert "wildcard not allowed in label value match" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The chart's values.schema.json refuses it before anything is sent.
        ("two", "at '/autoscaling/minReplicas': got string, want integer"),
        # Every schema accepts it; only the API server refuses the HPA it renders.
        (-3, "spec.minReplicas: Invalid value: -3"),
    ],
)
def test_an_upstream_values_file_with_a_wrong_value_fails_the_install(
    executor: Executor, repo_copy: Path, value: Any, expected: str
):
    layer_name, gateway = release("gateway")
    values_file = repo_copy / str(gateway.values_file)  # the file Flux and Argo CD pass
    values = yaml.safe_load(values_file.read_text()) or {}
    values["autoscaling"] = {**values.get("autoscaling", {}), "enabled": True, "minReplicas": value}
    values_file.write_text(yaml.safe_dump(values))
    with pytest.raises(CommandError) as err:
        executor.execute(
            helm_install(layer_name, gateway, render.load_yaml_file(REPO, values_file))
        )
    assert expected in str(err.value)
