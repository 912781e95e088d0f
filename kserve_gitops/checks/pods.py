"""Pod Security "restricted" and the rest of what every pod template must meet (read-only root,
resources, pinned images), and the model namespaces that enforce it. For an InferenceService the
predictor (and canary, transformer, explainer) is the pod spec KServe renders from."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from kserve_gitops.checks.rules import Context, Problems
from kserve_gitops.repo.render import Obj

WORKLOAD_KINDS = frozenset(
    {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
)
POD_KINDS = WORKLOAD_KINDS | {"InferenceService"}
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def pod_specs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, pod-level spec) of every pod template in the object."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return [("spec", spec)]
    if kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        return [("spec.jobTemplate.spec.template.spec", (job.get("template") or {}).get("spec"))]
    if kind in WORKLOAD_KINDS:
        return [("spec.template.spec", (spec.get("template") or {}).get("spec") or {})]
    if kind == "InferenceService":
        found = [
            (f"spec.{c}", spec[c])
            for c in ("predictor", "transformer", "explainer")
            if isinstance(spec.get(c), dict)
        ]
        for i, canary in enumerate(spec.get("canary") or []):
            if isinstance(canary.get("predictor"), dict):
                found.append((f"spec.canary.{i}.predictor", canary["predictor"]))
        return found
    return []


def containers(path: str, pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every container of a pod spec; KServe's `model` is the model server container."""
    found = [(f"{path}.model", pod["model"])] if isinstance(pod.get("model"), dict) else []
    for key in ("initContainers", "containers"):
        found += [(f"{path}.{key}.{i}", c) for i, c in enumerate(pod.get(key) or [])]
    return found


def each_container(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(path, container, its pod spec) of every container of the object."""
    for path, pod in pod_specs(obj):
        for cpath, container in containers(path, pod or {}):
            yield cpath, container, pod or {}


def _sc(d: dict[str, Any]) -> dict[str, Any]:
    return d.get("securityContext") or {}


def check_run_as_non_root(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, pod in each_container(obj):
        value = _sc(c).get("runAsNonRoot", _sc(pod).get("runAsNonRoot"))
        if value is not True:
            yield f"{path}.securityContext.runAsNonRoot", "must be true (here or on the pod)"
        if _sc(c).get("runAsUser", _sc(pod).get("runAsUser")) == 0:
            yield f"{path}.securityContext.runAsUser", "must not be 0 (root)"


def check_no_privilege_escalation(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in each_container(obj):
        if _sc(c).get("allowPrivilegeEscalation") is not False:
            yield f"{path}.securityContext.allowPrivilegeEscalation", "must be false"
        if _sc(c).get("privileged"):
            yield f"{path}.securityContext.privileged", "must not be true"


def check_capabilities(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in each_container(obj):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            yield f"{path}.securityContext.capabilities.drop", "must contain ALL"
        extra = sorted(set(caps.get("add") or []) - {"NET_BIND_SERVICE"})
        if extra:
            yield f"{path}.securityContext.capabilities.add", f"only NET_BIND_SERVICE, not {extra}"


def check_seccomp(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, pod in each_container(obj):
        profile = (_sc(c).get("seccompProfile") or _sc(pod).get("seccompProfile") or {}).get("type")
        if profile not in ("RuntimeDefault", "Localhost"):
            yield (
                f"{path}.securityContext.seccompProfile.type",
                f"must be RuntimeDefault or Localhost (here or on the pod), got {profile!r}",
            )


def check_host_access(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, pod in pod_specs(obj):
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if (pod or {}).get(key):
                yield f"{path}.{key}", "must not be true"
        for i, vol in enumerate((pod or {}).get("volumes") or []):
            if "hostPath" in vol:
                yield f"{path}.volumes.{i}.hostPath", "host paths are not allowed"


# The Pod Security "restricted" checks above, which also judge the pods KServe and Knative build.
RESTRICTED = (
    check_run_as_non_root,
    check_no_privilege_escalation,
    check_capabilities,
    check_seccomp,
    check_host_access,
)


def check_read_only_root(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in each_container(obj):
        if _sc(c).get("readOnlyRootFilesystem") is not True:
            yield f"{path}.securityContext.readOnlyRootFilesystem", "must be true"


def check_resources(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in each_container(obj):
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (res.get(kind) or {}):
                    yield f"{path}.resources.{kind}.{resource}", "must be set"


def check_image_pinned(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in each_container(obj):
        image = c.get("image")
        if image is None:
            continue  # KServe fills the model server image from the pinned ServingRuntime
        name = _DIGEST.sub("", str(image))
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        if not _DIGEST.search(str(image)) and tag in ("", "latest"):
            yield f"{path}.image", f"{image!r}: pin a version tag or digest, never latest/untagged"


def pss_version(ctx: Context) -> str:
    """The Pod Security Standards version: the minor of the Kubernetes versions.yaml pins."""
    return "v" + ".".join(ctx.repo.kubernetes_version.split(".")[:2])


def check_model_namespace_restricted(obj: dict[str, Any], ctx: Context) -> Problems:
    name = (obj.get("metadata") or {}).get("name")
    if name not in ctx.restricted_namespaces:
        return
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
        yield "metadata.labels.pod-security.kubernetes.io/enforce", "must be restricted"
    if labels.get("pod-security.kubernetes.io/enforce-version") != pss_version(ctx):
        yield (
            "metadata.labels.pod-security.kubernetes.io/enforce-version",
            f"must be {pss_version(ctx)}",
        )


def check_namespace_declared(objs: list[Obj], ctx: Context) -> Problems:
    declared = {o.name for o in objs if o.kind == "Namespace"}
    for ns in sorted(ctx.model_namespaces - declared):
        yield f"Namespace/{ns}", "the model namespace must be declared (to carry its labels)"
