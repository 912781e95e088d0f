"""The e2e plan's steps for one platform layer of clusters/<env> (kserve_gitops.repo.flux):
each HelmRelease installed with what only a throwaway cluster needs on top of its declared
values (e2e/values/<release>.yaml), then waited for until the next layer can rely on it
(kserve_gitops.e2e.readiness); the layer's plain manifests applied as the provider takes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kserve_gitops.e2e import node_plan
from kserve_gitops.e2e.readiness import (
    SKLEARN_RUNTIME,
    kserve_webhook_tls,
    readiness,
    wait_crds,
    wait_deployments,
    wait_endpoint,
)
from kserve_gitops.e2e.steps import Apply, HelmInstall, Poll, Run, StartControllers, Step
from kserve_gitops.repo import Repo, flux, render
from kserve_gitops.repo.render import Obj
from kserve_gitops.upstream import charts as upstream_charts
from kserve_gitops.upstream import crds

# Providers on the local control plane built from source (kserve_gitops.localcluster); "node"
# adds the real node (kserve_gitops.node).
LOCAL = ("kwok", "node")


def e2e_values_file(repo: Repo, release: str) -> Path | None:
    """e2e/values/<release>.yaml: what only a throwaway cluster needs on top of the declared
    values (as a path relative to the checkout, the way helm is given it)."""
    path = repo.e2e / "values" / f"{release}.yaml"
    return Path(repo.rel(path)) if path.is_file() else None


def install_release(
    repo: Repo,
    layer: str,
    rel: flux.Release,
    provider: str = "kind",
    refs: dict[str, str] | None = None,
) -> list[Step]:
    """kind installs from the chart's repository, as a user does; kwok from the chart cache
    (`make charts`), since this machine reaches no chart repository. On the real node, the
    test overlay's values (kserve_gitops.e2e.node_plan) go on top."""
    ready = readiness(rel.chart, rel.name)
    override = e2e_values_file(repo, rel.name)
    repository: str | None = rel.repository
    chart, version = rel.chart, rel.version
    values, source = rel.values, rel.values_file or f"HelmRelease {rel.name} spec.values"
    extra = node_plan.release_values(rel.name, refs or {}) if provider == "node" else {}
    if extra:
        values = render.merged(dict(values), extra)
        source += f" + real-node overlay {extra}"
    if provider in LOCAL:
        chart = repo.rel(upstream_charts.chart_dir(repo, rel.chart, rel.version))
        repository, version = None, None
    elif rel.repository.startswith("oci://") and rel.repository.rstrip("/").endswith(
        f"/{rel.chart}"
    ):
        repository = rel.repository.rstrip("/").removesuffix(f"/{rel.chart}")
    steps: list[Step] = [
        HelmInstall(
            layer,
            rel.name,
            chart,
            repository,
            version,
            rel.namespace,
            values=values,
            values_source=source,
            value_files=(override,) if override else (),
            # KServe's installer retries kserve-resources once: its Certificate can race the
            # cert-manager webhook's CA bundle on a fresh cluster.
            attempts=2 if rel.chart == "kserve-resources" else 1,
        )
    ]
    if ready.crds:
        steps.append(wait_crds(layer, ready.crds, ready.timeout_s))
    if ready.deployments:
        steps.append(wait_deployments(layer, rel.namespace, ready.timeout_s))
    steps += [
        Run(
            layer,
            f"wait: DaemonSet {rel.namespace}/{ds} ready on every node",
            (
                "kubectl",
                "rollout",
                "status",
                f"daemonset/{ds}",
                "-n",
                rel.namespace,
                f"--timeout={ready.timeout_s}s",
            ),
            ready.timeout_s + 30,
        )
        for ds in ready.daemonsets
    ]
    steps += [wait_endpoint(layer, rel.namespace, svc, ready.timeout_s) for svc in ready.services]
    if rel.chart == "kserve-resources":
        steps += kserve_webhook_tls(layer, rel.namespace)
    if rel.chart == "kserve-runtime-configs":
        steps.append(
            Poll(
                layer,
                f"check: ClusterServingRuntime {SKLEARN_RUNTIME} exists",
                ("kubectl", "get", "clusterservingruntime", SKLEARN_RUNTIME, "-o", "name"),
                "output",
                ready.timeout_s,
            )
        )
    if provider in LOCAL and rel.chart in CONTROLLER_CHARTS:
        steps.append(StartControllers(layer, CONTROLLER_CHARTS[rel.chart]))
    return steps


# Charts whose controllers the kwok provider runs as processes once the chart is installed
# (the Knative Serving controllers start once the operator created their Deployments).
CONTROLLER_CHARTS = {"knative-operator": "knative-operator", "kserve-resources": "kserve"}

# Group of the Prometheus Operator's objects (the monitoring layer). A monitored cluster already
# runs the operator; the e2e installs its pinned CRDs (config/crds.tsv) so the API server admits
# the monitors and rules, with nothing acting on them.
MONITORING_GROUP = "monitoring.coreos.com"


def monitoring_crds(repo: Repo, layer: flux.Layer) -> list[Step]:
    groups = {str(o.get("apiVersion", "")).split("/")[0] for o in layer.manifests}
    if MONITORING_GROUP not in groups:
        return []
    files = [p for p in crds.ensure(repo) if p.name.startswith(f"{MONITORING_GROUP}_")]
    names = tuple(f"{p.stem.split('_', 1)[1]}.{MONITORING_GROUP}" for p in files)
    args = [a for p in files for a in ("-f", repo.rel(p))]
    return [
        Run(
            layer.name,
            "apply the pinned Prometheus Operator CRDs (config/crds.tsv)",
            ("kubectl", "apply", "--server-side", *args),
            120,
        ),
        wait_crds(layer.name, names),
    ]


def on_one_node(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the one-node e2e cluster (e2e/kind-config.yaml) takes it: a claim the
    environment shares across nodes (ReadWriteMany) is ReadWriteOnce here, where every replica
    runs on the same node and kind's local-path provisioner offers nothing else."""
    if obj.get("kind") != "PersistentVolumeClaim":
        return obj
    spec = obj.get("spec") or {}
    if set(spec.get("accessModes") or []) <= {"ReadWriteOnce", "ReadWriteOncePod"}:
        return obj
    return {**obj, "spec": {**spec, "accessModes": ["ReadWriteOnce"]}}


# The registry of KServe's runtime images (kserve/sklearnserver), where Knative's controller
# resolves a revision's image tag to a digest. The kwok provider reaches no registry.
RUNTIME_REGISTRY = "index.docker.io"


def without_registry(obj: dict[str, Any]) -> dict[str, Any]:
    """The KnativeServing as the kwok provider applies it: the runtime images' registry added
    to registries-skipping-tag-resolving (the remedy platform/configs/knative-serving.yaml
    gives for a registry the controller cannot reach), so revisions run the tag."""
    if obj.get("kind") != "KnativeServing":
        return obj
    spec = obj.get("spec") or {}
    cfg = spec.get("config") or {}
    deployment = cfg.get("deployment") or {}
    key = "registries-skipping-tag-resolving"
    skipped = [r for r in str(deployment.get(key, "")).split(",") if r]
    if RUNTIME_REGISTRY in skipped:
        return obj
    deployment = {**deployment, key: ",".join([*skipped, RUNTIME_REGISTRY])}
    return {**obj, "spec": {**spec, "config": {**cfg, "deployment": deployment}}}


def on_real_node(obj: Obj, refs: dict[str, str], model_namespaces: set[str]) -> Obj:
    """An object as the real-node provider applies it (kserve_gitops.e2e.node_plan)."""
    if obj.get("kind") == "KnativeServing":
        return node_plan.knative_serving(obj, refs)
    if obj.get("kind") == "Namespace" and obj["metadata"]["name"] in model_namespaces:
        return node_plan.on_node_namespace(obj)
    return obj


def apply_layer(
    repo: Repo,
    layer: flux.Layer,
    provider: str = "kind",
    refs: dict[str, str] | None = None,
    model_namespaces: set[str] | None = None,
) -> list[Step]:
    objs = tuple(on_one_node(o) for o in layer.manifests)
    if provider in LOCAL:
        objs = tuple(without_registry(o) for o in objs)
    if provider == "node":
        objs = tuple(on_real_node(o, refs or {}, model_namespaces or set()) for o in objs)
    steps: list[Step] = [
        *monitoring_crds(repo, layer),
        Apply(
            layer.name,
            f"apply the plain manifests of {layer.path}",
            f"kustomize build {layer.path}",
            objs,
        ),
    ]
    for obj in layer.manifests:
        if obj.get("kind") == "KnativeServing":
            # Ready once every Serving and net-istio deployment is; KServe's installer gives it
            # 300s, twice that here because a fresh runner pulls all the Knative images first.
            meta = obj["metadata"]
            if provider == "kwok":
                steps.append(StartControllers(layer.name, "knative-serving"))
            # On the real node Knative Serving's own pods run (node_plan.KNATIVE_ON_NODE).
            steps.append(
                Run(
                    layer.name,
                    f"wait: KnativeServing {meta['namespace']}/{meta['name']} Ready",
                    (
                        "kubectl",
                        "wait",
                        "--for=condition=Ready",
                        f"knativeserving/{meta['name']}",
                        "-n",
                        meta["namespace"],
                        "--timeout=600s",
                    ),
                    630,
                )
            )
    return steps
