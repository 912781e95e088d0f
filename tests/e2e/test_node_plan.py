"""The real-node provider's plan: the test overlay it applies, and what it runs for real."""

from __future__ import annotations

from kserve_gitops.e2e import node_plan
from kserve_gitops.e2e.model_steps import ClusterPath, ColdStart, LoadTest, Predict, SloComparison
from kserve_gitops.e2e.plan import build
from kserve_gitops.e2e.steps import (
    Apply,
    HelmInstall,
    NotRun,
    Run,
    StartControllers,
    StartLocalCluster,
)
from kserve_gitops.node import images
from kserve_gitops.node.config import NODE_LABEL, TOLERATION
from tests import REPO

REFS = {
    "sklearnserver": "dev.local/kserve-gitops/sklearnserver:v0.20.0",
    **{f"knative-serving-{c}": f"dev.local/k/{c}:v1" for c in node_plan.KNATIVE_ON_NODE},
    "knative-serving-queue": "dev.local/k/queue:v1",
}


def test_knative_serving_keeps_declared_workloads_and_adds_placement() -> None:
    declared = {
        "kind": "KnativeServing",
        "spec": {
            "workloads": [{"name": "activator", "replicas": 2}],
            "config": {"deployment": {"progress-deadline": "600s"}},
        },
    }
    out = node_plan.knative_serving(declared, REFS)
    by_name = {w["name"]: w for w in out["spec"]["workloads"]}
    assert set(by_name) == set(node_plan.KNATIVE_ON_NODE)
    assert by_name["activator"]["replicas"] == 2  # the environment's own override stays
    assert by_name["activator"]["tolerations"] == [TOLERATION]
    assert by_name["webhook"]["nodeSelector"] == {NODE_LABEL: "real"}
    deployment = out["spec"]["config"]["deployment"]
    assert deployment["progress-deadline"] == "600s"
    assert deployment["queue-sidecar-image"] == "dev.local/k/queue:v1"
    assert out["spec"]["registry"]["override"]["activator"] == "dev.local/k/activator:v1"
    assert declared["spec"]["workloads"] == [{"name": "activator", "replicas": 2}]  # not mutated


def test_release_values_keep_istio_agents_off_the_node_and_name_the_local_runtime() -> None:
    cni = node_plan.release_values("istio-cni", REFS)
    term = cni["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"][0]["operator"] == "DoesNotExist"
    runtime = node_plan.release_values("kserve-runtime-configs", REFS)
    assert runtime["kserve"]["servingruntime"]["sklearnserver"] == {
        "image": "dev.local/kserve-gitops/sklearnserver",
        "tag": "v0.20.0",
    }
    assert node_plan.release_values("cert-manager", REFS) == {}


def test_the_node_plan_runs_the_model_for_real_and_says_what_it_cannot() -> None:
    plan = build(REPO, "dev", "node")
    steps = plan.steps
    assert isinstance(steps[0], StartLocalCluster) and steps[0].real_node
    # Knative Serving's own pods run on the node: no process stands in for them.
    groups = {s.group for s in steps if isinstance(s, StartControllers)}
    assert "knative-serving" not in groups and "kserve" in groups
    serving = next(
        o for s in steps if isinstance(s, Apply) for o in s.objects if o["kind"] == "KnativeServing"
    )
    refs = images.refs(REPO)
    assert serving["spec"]["registry"]["override"]["activator"] == refs["knative-serving-activator"]
    models_ns = next(
        o
        for s in steps
        if isinstance(s, Apply)
        for o in s.objects
        if o["kind"] == "Namespace" and o["metadata"]["name"] == plan.namespace
    )
    assert node_plan.ANNOTATE_SELECTOR in models_ns["metadata"]["annotations"]
    runtime = next(
        s for s in steps if isinstance(s, HelmInstall) and s.release == "kserve-runtime-configs"
    )
    assert "real-node overlay" in runtime.values_source
    # The loader pod copies the model for real (exec/cp run), on the local image.
    assert any(isinstance(s, Run) and s.command[:2] == ("kubectl", "cp") for s in steps)
    paths = [s.path for s in steps if isinstance(s, ClusterPath)]
    assert paths == ["service", "port-forward"]
    assert {s.path for s in steps if isinstance(s, (Predict, LoadTest))} == set(paths)
    assert any(isinstance(s, ColdStart) for s in steps)
    assert any(isinstance(s, SloComparison) for s in steps)
    not_run = [s for s in steps if isinstance(s, NotRun)]
    assert not_run and all("Istio" in s.title or "ingress" in s.reason for s in not_run)
