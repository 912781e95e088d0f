"""Which pod-spec fields Knative Serving's webhook admits, per feature flag.

The tables are knative.dev/serving v0.50.0 (Knative Serving 1.23.0, the version versions.yaml
pins), pkg/apis/serving/fieldmask.go: PodSpecMask (pod fields), PodSecurityContextMask,
CapabilitiesMask and EnvVarSourceMask; flag names and defaults from pkg/apis/config/features.go.
Re-derived at v0.50.0: these masks are as in v0.48.1 (Knative 1.21.1); 1.23 adds only a volume
flag, kubernetes.podspec-volumes-ephemeral (VolumeSourceMask, default Disabled), outside them.
A field outside the mask makes the webhook refuse the Knative Service KServe creates, so the
InferenceService never becomes Ready. `tests/knative/test_admission.py` re-derives the tables
from that source when the Go module is in the module cache.

KServe inlines the PodSpec into `spec.predictor` (pkg/apis/serving/v1beta1/predictor.go) and
passes it to the Knative Service unchanged (reconcilers/knative/ksvc_reconciler.go), so the
predictor's pod-level keys are the pod spec Knative validates; `model` becomes its container.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from kserve_gitops.repo import Repo
from kserve_gitops.upstream import kube_schemas

# PodSpecMask: fields Knative always keeps (automountServiceAccountToken only when false).
ALWAYS_ALLOWED = frozenset(
    {"serviceAccountName", "containers", "volumes", "imagePullSecrets", "enableServiceLinks"}
)
# PodSpecMask: field -> the flag that admits it (admitted unless the flag is "disabled").
POD_FIELD_FEATURES: Mapping[str, str] = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "tolerations": "kubernetes.podspec-tolerations",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
    "hostIPC": "kubernetes.podspec-hostipc",
    "hostPID": "kubernetes.podspec-hostpid",
    "hostNetwork": "kubernetes.podspec-hostnetwork",
}
POD_SECURITY_CONTEXT = "kubernetes.podspec-securitycontext"
SECURE_POD_DEFAULTS = "secure-pod-defaults"
FIELD_REF = "kubernetes.podspec-fieldref"
ADD_CAPABILITIES = "kubernetes.containerspec-addcapabilities"
# PodSecurityContextMask: with kubernetes.podspec-securitycontext.
POD_SECURITY_CONTEXT_FIELDS = frozenset(
    {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile"}
)
# ... and with secure-pod-defaults (Enabled or AllowRootBounded) alone: these seccomp types.
SECURE_DEFAULTS_SECCOMP = frozenset({"RuntimeDefault", "Unconfined"})
# features.go defaultFeaturesConfig: every flag above defaults to Disabled.
DISABLED = "disabled"


@dataclass(frozen=True)
class Refusal:
    """A field of the revision's pod spec that Knative's webhook would refuse."""

    path: str  # under spec.predictor of the InferenceService, e.g. nodeSelector
    feature: str  # the flag that would admit it, or "" when no flag does
    detail: str = ""


def pod_spec_fields(repo: Repo) -> frozenset[str]:
    """Every PodSpec field of the Kubernetes version `repo` pins (the schema objects are checked
    with)."""
    return _pod_spec_fields(repo.kubernetes_version)


@cache
def _pod_spec_fields(kube_version: str) -> frozenset[str]:
    defs_file = kube_schemas.builtin_dir(kube_version) / "_definitions.json"
    defs = json.loads(defs_file.read_text())["$defs"]
    return frozenset(defs["io.k8s.api.core.v1.PodSpec"]["properties"])


def features(knative_serving: Mapping[str, Any]) -> dict[str, str]:
    """The KnativeServing's spec.config.features (the operator's config-features), lowercased."""
    spec = knative_serving.get("spec") or {}
    raw = (spec.get("config") or {}).get("features") or {}
    return {str(k): str(v).strip().lower() for k, v in raw.items()}


def enabled(flags: Mapping[str, str], feature: str) -> bool:
    """As fieldmask.go tests it: anything but Disabled (the default) admits the field."""
    return flags.get(feature, DISABLED) != DISABLED


def secure_defaults(flags: Mapping[str, str]) -> bool:
    """Whether secure-pod-defaults is on: unlike other flags, only Enabled or AllowRootBounded
    (PodSecurityContextMask, CapabilitiesMask, revision_defaults.go)."""
    return flags.get(SECURE_POD_DEFAULTS, DISABLED) in ("enabled", "allowrootbounded")


def refusals(
    repo: Repo, predictor: Mapping[str, Any], flags: Mapping[str, str]
) -> Iterator[Refusal]:
    """The predictor's pod-level fields and model container fields Knative would refuse."""
    for key in sorted(set(predictor) & pod_spec_fields(repo)):
        value = predictor[key]
        if key in ALWAYS_ALLOWED:
            continue
        if key == "automountServiceAccountToken":
            if value is not False:
                yield Refusal(key, "", "Knative admits only false")
        elif key == "securityContext":
            yield from _pod_security_context(value or {}, flags)
        elif key in POD_FIELD_FEATURES:
            if not enabled(flags, POD_FIELD_FEATURES[key]):
                yield Refusal(key, POD_FIELD_FEATURES[key])
        else:
            yield Refusal(key, "", "Knative never admits this pod field")
    model = predictor.get("model") or {}
    for i, env in enumerate(model.get("env") or []):
        for ref in ("fieldRef", "resourceFieldRef"):
            if ref in (env.get("valueFrom") or {}) and not enabled(flags, FIELD_REF):
                yield Refusal(f"model.env.{i}.valueFrom.{ref}", FIELD_REF)
    add = ((model.get("securityContext") or {}).get("capabilities") or {}).get("add")
    bind_only = secure_defaults(flags) and list(add or []) == ["NET_BIND_SERVICE"]
    if add and not enabled(flags, ADD_CAPABILITIES) and not bind_only:
        yield Refusal(
            "model.securityContext.capabilities.add",
            ADD_CAPABILITIES,
            f"or {SECURE_POD_DEFAULTS} with exactly [NET_BIND_SERVICE]",
        )


def _pod_security_context(sc: Mapping[str, Any], flags: Mapping[str, str]) -> Iterator[Refusal]:
    full = enabled(flags, POD_SECURITY_CONTEXT)
    for key in sorted(sc):
        path = f"securityContext.{key}"
        if key not in POD_SECURITY_CONTEXT_FIELDS:
            yield Refusal(path, "", "Knative never admits this pod security context field")
        elif full:
            continue
        elif key == "seccompProfile" and secure_defaults(flags):
            kind = (sc[key] or {}).get("type")
            if kind not in SECURE_DEFAULTS_SECCOMP:
                yield Refusal(
                    f"{path}.type",
                    POD_SECURITY_CONTEXT,
                    f"{SECURE_POD_DEFAULTS} admits only {sorted(SECURE_DEFAULTS_SECCOMP)}",
                )
        elif key == "seccompProfile":
            yield Refusal(path, f"{SECURE_POD_DEFAULTS} or {POD_SECURITY_CONTEXT}")
        else:
            yield Refusal(path, POD_SECURITY_CONTEXT)


def needed(predictor: Mapping[str, Any]) -> set[str]:
    """The flags the predictor's pod fields need (for "enabled but unused")."""
    return {POD_FIELD_FEATURES[k] for k in predictor if k in POD_FIELD_FEATURES}
