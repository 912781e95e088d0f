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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kserve_gitops.node.config import NODE_LABEL, NODE_VALUE, TOLERATION

# Knative Serving deployments that run on the real node, by container name (one each).
KNATIVE_ON_NODE = ("activator", "autoscaler", "controller", "webhook")
# Releases whose pods must stay on the fake nodes, and why.
OFF_NODE = {
    "istio-cni": "Istio's CNI agent (its images are not built here)",
    "ztunnel": "Istio's ztunnel (Rust/Envoy data plane, not buildable here)",
}
SKLEARN_RUNTIME_RELEASE = "kserve-runtime-configs"
ANNOTATE_SELECTOR = "scheduler.alpha.kubernetes.io/node-selector"
ANNOTATE_TOLERATIONS = "scheduler.alpha.kubernetes.io/defaultTolerations"
Obj = Mapping[str, Any]


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
