"""The test overlay of the real-node provider (`make e2e CLUSTER=node`): what the run changes
on top of what the environment declares so that the model and Knative's data plane run in real
pods on the one real node, while everything else stays on kwok's fake nodes. It exists only for
the test; the plan prints every object and release it touches, with the reason.

- Images: the locally built ones (kserve_gitops.node.images, dev.local/kserve-gitops/...) in
  place of the registries' (Knative skips tag-to-digest resolution for dev.local); nothing is
  pulled.
- Placement: the real node is tainted; the pods meant for it get a toleration and its label as
  node selector. Knative's activator, autoscaler, controller and webhook through the
  KnativeServing's `workloads` overrides; every pod of the model namespaces through that
  namespace's PodNodeSelector and PodTolerationRestriction annotations (the API server's
  admission plugins), so the InferenceService itself is unchanged.
- Off the real node: Istio's node agents (istio-cni, ztunnel) tolerate every taint, and run
  Envoy-based binaries that cannot be built here; their DaemonSets get a node affinity for the
  fake nodes.

Also the real node's own steps: the verification through the cluster paths (`verify`) and the
reliability scenarios (`reliability`, kserve_gitops.e2e.reliability).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kserve_gitops.e2e import golden
from kserve_gitops.e2e.model_steps import (
    ClusterPath,
    ColdStart,
    LoadTest,
    Predict,
    Reliability,
    SloComparison,
)
from kserve_gitops.e2e.steps import HelmInstall, NotRun, Run, Step
from kserve_gitops.node.config import NODE_LABEL, NODE_VALUE, TOLERATION
from kserve_gitops.repo import Repo, flux
from kserve_gitops.repo.render import RenderError

# Knative Serving deployments that run on the real node, by container name (one each).
KNATIVE_ON_NODE = ("activator", "autoscaler", "controller", "webhook")
# Releases whose pods must stay on the fake nodes, and why.
OFF_NODE = {
    "istio-cni": "Istio's CNI agent (its images are not built here)",
    "ztunnel": "Istio's ztunnel (Rust/Envoy data plane, not buildable here)",
}
SKLEARN_RUNTIME_RELEASE = "kserve-runtime-configs"
FLUX_ORIGIN = "helm.toolkit.fluxcd.io"  # helm-controller's origin labels: <group>/name, /namespace
FLUX_NAMESPACE = "flux-system"  # where the environments' HelmReleases live
ANNOTATE_SELECTOR = "scheduler.alpha.kubernetes.io/node-selector"
ANNOTATE_TOLERATIONS = "scheduler.alpha.kubernetes.io/defaultTolerations"
Obj = Mapping[str, Any]

# The reliability scenarios in the order they run, after the steady-state check: the faults (the
# load wakes the pod if it scaled to zero meanwhile), the broken release Flux rolls back, the
# rollout (canary, rollback), then the scale from zero, which ends with no pod. The broken release
# comes before the rollout: after a canary, KServe's status.observedGeneration (the Knative
# Service's) runs ahead of the InferenceService's generation, and helm-controller's health check
# then reads the InferenceService as in progress until its timeout (docs/reliability.md).
RELIABILITY_SCENARIOS = (
    "container-kill",
    "kubelet-restart",
    "containerd-restart",
    "broken-release",
    "rollout",
    "scale-from-zero",
)


def knative_image(refs: Mapping[str, str], container: str) -> str:
    name = "queue" if container == "queue-proxy" else container
    return refs[f"knative-serving-{name}"]


def knative_serving(obj: Obj, refs: Mapping[str, str]) -> dict[str, Any]:
    """The KnativeServing with the local images and the data plane placed on the real node
    (merged into the workloads the environment declares, by name)."""
    spec = dict(obj.get("spec") or {})
    registry = dict(spec.get("registry") or {})
    override = dict(registry.get("override") or {})
    override |= {c: knative_image(refs, c) for c in (*KNATIVE_ON_NODE, "queue-proxy")}
    config = dict(spec.get("config") or {})
    deployment = dict(config.get("deployment") or {})
    deployment["queue-sidecar-image"] = knative_image(refs, "queue-proxy")
    workloads = {w["name"]: dict(w) for w in spec.get("workloads") or []}
    for name in KNATIVE_ON_NODE:
        w = workloads.setdefault(name, {"name": name})
        w["nodeSelector"] = {**(w.get("nodeSelector") or {}), NODE_LABEL: NODE_VALUE}
        w["tolerations"] = [*(w.get("tolerations") or []), TOLERATION]
    spec |= {
        "registry": {**registry, "override": override},
        "config": {**config, "deployment": deployment},
        "workloads": list(workloads.values()),
    }
    return {**obj, "spec": spec}


def on_node_namespace(obj: Obj) -> dict[str, Any]:
    """A Namespace whose every pod runs on the real node."""
    meta = dict(obj.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    annotations[ANNOTATE_SELECTOR] = f"{NODE_LABEL}={NODE_VALUE}"
    annotations[ANNOTATE_TOLERATIONS] = (
        f'[{{"key": "{NODE_LABEL}", "operator": "Equal", "value": "{NODE_VALUE}", '
        '"effect": "NoSchedule"}]'
    )
    return {**obj, "metadata": {**meta, "annotations": annotations}}


def release_values(release: str, refs: Mapping[str, str]) -> dict[str, Any]:
    """Values the real-node run adds to an upstream release (empty: none)."""
    if release in OFF_NODE:
        term = {"matchExpressions": [{"key": NODE_LABEL, "operator": "DoesNotExist"}]}
        return {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
                }
            }
        }
    if release == SKLEARN_RUNTIME_RELEASE:
        image, _, tag = refs["sklearnserver"].rpartition(":")
        return {"kserve": {"servingruntime": {"sklearnserver": {"image": image, "tag": tag}}}}
    return {}


def local_image(obj: Obj, refs: Mapping[str, str]) -> dict[str, Any]:
    """The e2e's own pods (the model loader) on the locally built sklearnserver image."""
    if obj.get("kind") != "Pod":
        return dict(obj)
    spec = dict(obj["spec"])
    spec["containers"] = [{**c, "image": refs["sklearnserver"]} for c in spec["containers"]]
    return {**obj, "spec": spec}


def flux_origin(step: Step) -> Step:
    """The model's release with the labels helm-controller puts on the objects of a release it
    installs, so that Flux taking it over in the broken-release scenario changes no label:
    KServe copies an InferenceService's labels into its revisions, and a new label would roll a
    revision and leave KServe's observedGeneration ahead of the InferenceService's for good
    (docs/reliability.md). A release Flux installs from the start has them from the start."""
    if not isinstance(step, HelmInstall):
        return step
    labels = {
        f"{FLUX_ORIGIN}/name": step.release,
        f"{FLUX_ORIGIN}/namespace": FLUX_NAMESPACE,
    }
    return replace(step, values={**step.values, "labels": labels})


def verify(repo: Repo, env: str, rel: flux.Release) -> list[Step]:
    """The model served by a real pod, each path with its own predictions and latency: the
    revision's Service (kube-proxy, queue-proxy) first, whose traffic keeps the revision
    scaled up for the port-forward path after it; then the cold start from zero through the
    activator; the Istio ingress is not run (Envoy cannot be built here)."""
    model, ns = rel.name, rel.namespace
    select = f"serving.kserve.io/inferenceservice={model}"
    cases = golden.predictions(repo, model)

    def wait(kind: str, title: str) -> Run:
        argv = ("kubectl", "wait", "--for=condition=Ready", kind, "-l", select)
        return Run("verify", title, (*argv, "-n", ns, "--timeout=300s"), 330)

    steps: list[Step] = [
        wait("revision", f"wait: the Revision of {model} Ready (its Deployment available)"),
        wait("pod", f"wait: the predictor pod of {model} Ready (the kubelet's probes)"),
        NotRun(
            "verify",
            f"resolve the Host of {model} and predict through the Istio ingress",
            "the Istio ingress gateway and net-istio cannot be built here (Envoy is not on "
            "these registries; knative.dev/net-istio is not served)",
        ),
    ]
    for path in ("service", "port-forward"):
        steps.append(ClusterPath("verify", model, ns, path))
        for protocol in ("v1", "v2"):
            steps += [
                Predict("verify", model, protocol, rows, want, path=path) for rows, want in cases
            ]
        steps.append(LoadTest("verify", env, model, "v1", path=path))
    steps.append(SloComparison("verify", env, model, ("service", "port-forward")))
    rows, want = cases[0]
    steps.append(ColdStart("verify", model, ns, rows, want))
    return steps


def reliability(
    repo: Repo, rel: flux.Release, percent: int, names: tuple[str, ...] | None = None
) -> list[Step]:
    """The reliability scenarios against the model (those of `names`, in the usual order, or
    all), with the golden set's first case."""
    unknown = sorted(set(names or ()) - set(RELIABILITY_SCENARIOS))
    if unknown:
        raise RenderError(
            f"e2e --scenarios: unknown {', '.join(unknown)} (one of "
            f"{', '.join(RELIABILITY_SCENARIOS)})"
        )
    rows, want = golden.predictions(repo, rel.name)[0]
    return [
        Reliability("reliability", name, rel.name, rel.namespace, rows, want, percent)
        for name in RELIABILITY_SCENARIOS
        if names is None or name in names
    ]
