"""The pod of a Knative-mode InferenceService revision, as KServe and Knative build it: the model
container from `spec.predictor.model`, Knative's queue-proxy beside it, KServe's
storage-initializer before it when the model is downloaded, and the predictor's pod fields.

Sources, at the pinned versions:
- queue-proxy: knative.dev/serving v0.50.0 pkg/reconciler/revision/resources/queue.go
  (queueSecurityContext, createQueueResources) and pkg/deployment/config.go (the
  queue-sidecar-* keys of config-deployment, i.e. KnativeServing spec.config.deployment;
  queue-sidecar-cpu-request defaults to 25m, nothing else is set unless configured or
  queueproxy.resource-defaults is enabled; v0.50.0 adds only the queue-sidecar-tls-* keys, which
  become queue-proxy environment variables, not resources or security context);
- secure-pod-defaults: pkg/apis/serving/v1/revision_defaults.go (defaultSecurityContext);
- storage-initializer: github.com/kserve/kserve v0.20.0 pkg/webhook/admission/pod/
  storage_initializer_injector.go (pvc:// is mounted directly, no init container; other schemes
  the default ClusterStorageContainer matches get one) and charts/kserve-resources values.yaml
  `kserve.storage` (its resources and containerSecurityContext), merged with the environment's
  kserve-resources values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kserve_gitops.knative import admission
from kserve_gitops.repo import Repo, render

QUEUE_PROXY = "queue-proxy"
MODEL_CONTAINER = "kserve-container"
STORAGE_INITIALIZER = "storage-initializer"
QUEUE_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# config-deployment keys -> (requests|limits, resource).
QUEUE_RESOURCE_KEYS: Mapping[str, tuple[str, str]] = {
    "queue-sidecar-cpu-request": ("requests", "cpu"),
    "queue-sidecar-cpu-limit": ("limits", "cpu"),
    "queue-sidecar-memory-request": ("requests", "memory"),
    "queue-sidecar-memory-limit": ("limits", "memory"),
}
QUEUE_DEFAULTS = {"queue-sidecar-cpu-request": "25m"}
# With the queueproxy.resource-defaults feature, unset keys fall back to these.
QUEUE_RESOURCE_DEFAULTS = {
    "queue-sidecar-cpu-request": "25m",
    "queue-sidecar-cpu-limit": "1000m",
    "queue-sidecar-memory-request": "400Mi",
    "queue-sidecar-memory-limit": "800Mi",
}
# kserve-resources v0.20.0 values.yaml, kserve.storage.
STORAGE_DEFAULTS: dict[str, Any] = {
    "resources": {
        "requests": {"memory": "100Mi", "cpu": "100m"},
        "limits": {"memory": "1Gi", "cpu": "1"},
    },
    "containerSecurityContext": {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    },
}
# Schemes that need no download into the pod: a claim mounted directly, an OCI modelcar.
NO_INIT_CONTAINER = ("pvc://", "oci://")


def is_knative(isvc: Mapping[str, Any]) -> bool:
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    return annotations.get("serving.kserve.io/deploymentMode") in ("Knative", "Serverless")


def queue_proxy(knative_serving: Mapping[str, Any]) -> dict[str, Any]:
    config = ((knative_serving.get("spec") or {}).get("config") or {}).get("deployment") or {}
    flags = admission.features(knative_serving)
    defaults = admission.enabled(flags, "queueproxy.resource-defaults")
    fallback = QUEUE_RESOURCE_DEFAULTS if defaults else QUEUE_DEFAULTS
    resources: dict[str, dict[str, str]] = {}
    for key, (kind, resource) in QUEUE_RESOURCE_KEYS.items():
        value = config.get(key, fallback.get(key))
        if value is not None:
            resources.setdefault(kind, {})[resource] = str(value)
    return {
        "name": QUEUE_PROXY,
        "resources": resources,
        "securityContext": copy.deepcopy(QUEUE_SECURITY_CONTEXT),
    }


def storage_initializer(
    storage_uri: str, kserve_values: Mapping[str, Any]
) -> dict[str, Any] | None:
    if not storage_uri or storage_uri.startswith(NO_INIT_CONTAINER):
        return None
    given = ((kserve_values.get("kserve") or {}).get("storage")) or {}
    storage = copy.deepcopy(render.merged(STORAGE_DEFAULTS, given))
    return {
        "name": STORAGE_INITIALIZER,
        "resources": storage.get("resources") or {},
        "securityContext": storage.get("containerSecurityContext") or {},
    }


def _apply_secure_defaults(
    container: dict[str, Any], pod_sc: Mapping[str, Any], flags: Mapping[str, str]
) -> None:
    """revision_defaults.go defaultSecurityContext, for the user container."""
    if not admission.secure_defaults(flags):
        return
    sc = container.setdefault("securityContext", {})
    sc.setdefault("allowPrivilegeEscalation", False)
    if not (pod_sc.get("seccompProfile") or {}).get("type"):
        sc.setdefault("seccompProfile", {}).setdefault("type", "RuntimeDefault")
    sc.setdefault("capabilities", {"drop": ["ALL"]})
    enabled = flags.get(admission.SECURE_POD_DEFAULTS) == "enabled"
    if enabled and pod_sc.get("runAsNonRoot") is None:
        sc.setdefault("runAsNonRoot", True)


def pod(
    repo: Repo,
    isvc: Mapping[str, Any],
    knative_serving: Mapping[str, Any],
    kserve_values: Mapping[str, Any],
) -> dict[str, Any]:
    """The revision pod of the InferenceService's predictor (a Pod manifest)."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    model = predictor.get("model") or {}
    flags = admission.features(knative_serving)
    spec: dict[str, Any] = {
        k: copy.deepcopy(v)
        for k, v in predictor.items()
        if k in admission.pod_spec_fields(repo) and k not in ("containers", "initContainers")
    }
    container = {
        "name": MODEL_CONTAINER,
        **{k: copy.deepcopy(model[k]) for k in ("resources", "securityContext") if k in model},
    }
    _apply_secure_defaults(container, spec.get("securityContext") or {}, flags)
    spec["containers"] = [container, queue_proxy(knative_serving)]
    init = storage_initializer(str(model.get("storageUri", "")), kserve_values)
    if init:
        spec["initContainers"] = [init]
    meta = isvc.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{meta.get('name')}-predictor", "namespace": meta.get("namespace")},
        "spec": spec,
    }


def quantity(value: Any) -> float | None:
    """A Kubernetes quantity as a number, for equality (requests == limits)."""
    if value is None:
        return None
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in binary.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def guaranteed_gaps(resources: Mapping[str, Any]) -> list[str]:
    """Why a container keeps its pod out of the Guaranteed QoS class (empty: it does not).
    Kubernetes: cpu and memory limits set, and requests (defaulting to limits) equal them."""
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    gaps = []
    for resource in ("cpu", "memory"):
        limit = quantity(limits.get(resource))
        request = quantity(requests.get(resource, limits.get(resource)))
        if limit is None:
            gaps.append(f"no {resource} limit")
        elif request != limit:
            gaps.append(f"{resource} request {requests.get(resource)} != limit {limits[resource]}")
    return gaps
