"""Security policies over every object an environment applies (and every chart scenario), plus a
scan of the repository for anything that looks like a credential.

    kgops policy               # every environment, the chart scenarios, the repo
    kgops policy --env prod    # one environment (and the repo scan)

The rules are data: each has an id, what it requires, the kinds it applies to and a check that
yields (field, problem) pairs. Object rules see one object; environment rules see all objects of
an environment (mTLS, who may call the predictors, default deny). Exit 1 on any violation.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.knative import admission, revision
from kserve_gitops.repo import Repo, paths, render
from kserve_gitops.repo.render import Obj, RenderError

Problems = Iterator[tuple[str, str]]  # (field path, what is wrong)

# Callers allowed into the model namespace (Istio mTLS principals): the ingress gateway and
# Knative's activator carry requests, the autoscaler reads queue-proxy stats, Prometheus scrapes.
ALLOWED_PRINCIPALS = frozenset(
    {
        "cluster.local/ns/istio-system/sa/istio-ingressgateway",
        "cluster.local/ns/knative-serving/sa/activator",
        "cluster.local/ns/knative-serving/sa/controller",
        "cluster.local/ns/monitoring/sa/prometheus",
    }
)
REQUIRED_PRINCIPALS = frozenset(
    {
        "cluster.local/ns/istio-system/sa/istio-ingressgateway",
        "cluster.local/ns/knative-serving/sa/activator",
        "cluster.local/ns/monitoring/sa/prometheus",
    }
)
PSS_VERSION = "v1.34"
WORKLOAD_KINDS = frozenset(
    {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
)
POD_KINDS = WORKLOAD_KINDS | {"InferenceService"}
# Environment variable names that carry a credential: only valueFrom (a Secret) is acceptable.
SECRET_ENV = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL|PRIVATE_KEY)")


@dataclass(frozen=True)
class Violation:
    rule: str
    where: str  # file or rendered source, and object
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: [{self.rule}] {self.message}"


# --- where the pods are ------------------------------------------------------------------------


def pod_specs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, pod-level spec) of every pod template in the object. For an InferenceService the
    predictor (and canary, transformer, explainer) is the pod spec KServe renders from."""
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


def _each_container(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for path, pod in pod_specs(obj):
        for cpath, container in containers(path, pod or {}):
            yield cpath, container, pod or {}


# --- object rules ------------------------------------------------------------------------------


def _sc(d: dict[str, Any]) -> dict[str, Any]:
    return d.get("securityContext") or {}


def check_run_as_non_root(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, pod in _each_container(obj):
        value = _sc(c).get("runAsNonRoot", _sc(pod).get("runAsNonRoot"))
        if value is not True:
            yield f"{path}.securityContext.runAsNonRoot", "must be true (here or on the pod)"
        if _sc(c).get("runAsUser", _sc(pod).get("runAsUser")) == 0:
            yield f"{path}.securityContext.runAsUser", "must not be 0 (root)"


def check_no_privilege_escalation(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in _each_container(obj):
        if _sc(c).get("allowPrivilegeEscalation") is not False:
            yield f"{path}.securityContext.allowPrivilegeEscalation", "must be false"
        if _sc(c).get("privileged"):
            yield f"{path}.securityContext.privileged", "must not be true"


def check_capabilities(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in _each_container(obj):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            yield f"{path}.securityContext.capabilities.drop", "must contain ALL"
        extra = sorted(set(caps.get("add") or []) - {"NET_BIND_SERVICE"})
        if extra:
            yield f"{path}.securityContext.capabilities.add", f"only NET_BIND_SERVICE, not {extra}"


def check_seccomp(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, pod in _each_container(obj):
        profile = (_sc(c).get("seccompProfile") or _sc(pod).get("seccompProfile") or {}).get("type")
        if profile not in ("RuntimeDefault", "Localhost"):
            yield (
                f"{path}.securityContext.seccompProfile.type",
                f"must be RuntimeDefault or Localhost (here or on the pod), got {profile!r}",
            )


def check_read_only_root(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in _each_container(obj):
        if _sc(c).get("readOnlyRootFilesystem") is not True:
            yield f"{path}.securityContext.readOnlyRootFilesystem", "must be true"


def check_host_access(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, pod in pod_specs(obj):
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if (pod or {}).get(key):
                yield f"{path}.{key}", "must not be true"
        for i, vol in enumerate((pod or {}).get("volumes") or []):
            if "hostPath" in vol:
                yield f"{path}.volumes.{i}.hostPath", "host paths are not allowed"


def check_resources(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in _each_container(obj):
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (res.get(kind) or {}):
                    yield f"{path}.resources.{kind}.{resource}", "must be set"


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def check_image_pinned(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in _each_container(obj):
        image = c.get("image")
        if image is None:
            continue  # KServe fills the model server image from the pinned ServingRuntime
        name = _DIGEST.sub("", str(image))
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        if not _DIGEST.search(str(image)) and tag in ("", "latest"):
            yield f"{path}.image", f"{image!r}: pin a version tag or digest, never latest/untagged"


def check_credentials_by_reference(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in _each_container(obj):
        for i, env in enumerate(c.get("env") or []):
            if SECRET_ENV.search(str(env.get("name", "")).upper()) and "value" in env:
                yield (
                    f"{path}.env.{i}.value",
                    f"{env.get('name')} is a credential: use valueFrom.secretKeyRef "
                    "(or a service account), never a literal value",
                )


def check_secret_objects(obj: dict[str, Any], _ctx: Context) -> Problems:
    for key in ("data", "stringData"):
        for name in obj.get(key) or {}:
            if SECRET_ENV.search(name.upper()) or name.lower() in ("password", "token", "key"):
                yield (
                    f"{key}.{name}",
                    "credential committed in a Secret: deliver it out of band (sealed or "
                    "external secret) and reference it",
                )


def check_model_namespace_restricted(obj: dict[str, Any], ctx: Context) -> Problems:
    name = (obj.get("metadata") or {}).get("name")
    if name not in ctx.restricted_namespaces:
        return
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
        yield "metadata.labels.pod-security.kubernetes.io/enforce", "must be restricted"
    if labels.get("pod-security.kubernetes.io/enforce-version") != PSS_VERSION:
        yield "metadata.labels.pod-security.kubernetes.io/enforce-version", f"must be {PSS_VERSION}"


# --- environment rules (all objects of one environment) ---------------------------------------


def _in(objs: list[Obj], kind: str, namespace: str) -> list[Obj]:
    return [
        o
        for o in objs
        if o.kind == kind and (o.body.get("metadata") or {}).get("namespace") == namespace
    ]


def check_namespace_declared(objs: list[Obj], ctx: Context) -> Problems:
    declared = {o.name for o in objs if o.kind == "Namespace"}
    for ns in sorted(ctx.model_namespaces - declared):
        yield f"Namespace/{ns}", "the model namespace must be declared (to carry its labels)"


def check_mtls_strict(objs: list[Obj], ctx: Context) -> Problems:
    for ns in sorted(ctx.model_namespaces):
        strict = [
            o
            for o in _in(objs, "PeerAuthentication", ns)
            if ((o.body.get("spec") or {}).get("mtls") or {}).get("mode") == "STRICT"
            and not (o.body.get("spec") or {}).get("selector")
        ]
        if not strict:
            yield f"PeerAuthentication in {ns}", "a namespace-wide mtls.mode STRICT is required"
        for o in _in(objs, "PeerAuthentication", ns):
            for port, mode in ((o.body.get("spec") or {}).get("portLevelMtls") or {}).items():
                if (mode or {}).get("mode") != "STRICT":
                    yield f"{o.ref}.spec.portLevelMtls.{port}", "weakens STRICT mTLS"


def check_authorization(objs: list[Obj], ctx: Context) -> Problems:
    for ns in sorted(ctx.model_namespaces):
        policies = _in(objs, "AuthorizationPolicy", ns)
        allowed: set[str] = set()
        for o in policies:
            spec = o.body.get("spec") or {}
            if spec.get("action", "ALLOW") != "ALLOW":
                continue
            for i, rule in enumerate(spec.get("rules") or [{}]):
                sources = [f.get("source") or {} for f in rule.get("from") or []]
                if not sources:
                    yield f"{o.ref}.spec.rules.{i}.from", "a rule without sources allows everyone"
                for j, src in enumerate(sources):
                    principals = set(src.get("principals") or [])
                    if not principals or set(src) - {"principals"}:
                        yield (
                            f"{o.ref}.spec.rules.{i}.from.{j}.source",
                            "sources must be service-account principals only",
                        )
                    for p in sorted(principals - ALLOWED_PRINCIPALS):
                        yield f"{o.ref}.spec.rules.{i}.from.{j}.source.principals", f"{p!r}"
                    allowed |= principals & ALLOWED_PRINCIPALS
        for p in sorted(REQUIRED_PRINCIPALS - allowed):
            yield f"AuthorizationPolicy in {ns}", f"must allow {p}"


def check_network_policies(objs: list[Obj], ctx: Context) -> Problems:
    for ns in sorted(ctx.model_namespaces):
        policies = _in(objs, "NetworkPolicy", ns)
        deny = [
            o
            for o in policies
            if (o.body.get("spec") or {}).get("podSelector") == {}
            and "Ingress" in ((o.body.get("spec") or {}).get("policyTypes") or [])
            and not (o.body.get("spec") or {}).get("ingress")
        ]
        if not deny:
            yield (
                f"NetworkPolicy in {ns}",
                "a default-deny ingress policy (podSelector {}) is required",
            )
        # The network layer admits the namespaces of the mTLS identities the AuthorizationPolicy
        # allows, and no other: each peer names one of them and the pods within it.
        namespaces = {p.split("/ns/", 1)[1].split("/", 1)[0] for p in ALLOWED_PRINCIPALS}
        ambient = (_namespace_labels(objs, ns) or {}).get(AMBIENT_LABEL) == "ambient"
        for o in policies:
            for i, rule in enumerate((o.body.get("spec") or {}).get("ingress") or []):
                peers = rule.get("from") or []
                if not peers or any(not p for p in peers):
                    yield f"{o.ref}.spec.ingress.{i}.from", "allows every source"
                if not rule.get("ports"):
                    yield f"{o.ref}.spec.ingress.{i}.ports", "allows every port"
                for j, peer in enumerate(peers):
                    if ambient and peer == AMBIENT_PROBE_PEER:
                        continue  # kubelet probes, source-NATed by istio-cni (no identity)
                    labels = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                    ns_name = labels.get("kubernetes.io/metadata.name")
                    if ns_name not in namespaces or not peer.get("podSelector"):
                        yield (
                            f"{o.ref}.spec.ingress.{i}.from.{j}",
                            "peers must name a caller's namespace by kubernetes.io/metadata.name "
                            f"({', '.join(sorted(namespaces))}) and its pods",
                        )


# --- who enforces the mesh policies -------------------------------------------------------------

AMBIENT_LABEL = "istio.io/dataplane-mode"
WAYPOINT_LABEL = "istio.io/use-waypoint"
# istio-cni source-NATs kubelet probes of ambient pods to this address (Istio docs, "Ambient and
# Kubernetes NetworkPolicy"); it carries no identity, so only probe ports may admit it.
AMBIENT_PROBE_PEER = {"ipBlock": {"cidr": "169.254.7.127/32"}}
# AuthorizationPolicy fields only an L7 proxy (sidecar or waypoint) can evaluate; ztunnel fails
# closed on them (Istio docs, "ztunnel ... L7 policy": such a rule becomes a DENY).
L7_OPERATION = frozenset({"methods", "notMethods", "paths", "notPaths", "hosts", "notHosts"})
L7_SOURCE = frozenset({"requestPrincipals", "notRequestPrincipals"})
MESH_POLICY_KINDS = ("PeerAuthentication", "AuthorizationPolicy")
ISTIO_ROOT_NAMESPACE = "istio-system"  # its policies are mesh-wide, not a namespace's


def _namespace_labels(objs: list[Obj], ns: str) -> dict[str, str] | None:
    """The labels of the declared Namespace `ns`, None when the environment does not declare it."""
    for o in objs:
        if o.kind == "Namespace" and o.name == ns:
            return dict((o.body.get("metadata") or {}).get("labels") or {})
    return None


def _release_values(objs: list[Obj], chart: str) -> dict[str, Any] | None:
    """Values of the Flux HelmRelease installing upstream `chart`, None when none installs it."""
    for o in objs:
        spec = o.body.get("spec") or {}
        if (
            o.kind != "HelmRelease"
            or ((spec.get("chart") or {}).get("spec") or {}).get("chart") != chart
        ):
            continue
        values: dict[str, Any] = {}
        for ref in spec.get("valuesFrom") or []:
            cm = next(
                (c for c in objs if c.kind == "ConfigMap" and c.name.startswith(ref["name"])),
                None,
            )
            if cm is not None:
                values |= yaml.safe_load((cm.body.get("data") or {}).get("values.yaml") or "") or {}
        return values | (spec.get("values") or {})
    return None


def ambient_gaps(objs: list[Obj]) -> list[str]:
    """What the environment lacks for Istio's ambient mode (empty: ztunnel enforces policies)."""
    gaps = []
    istiod, cni, ztunnel = (_release_values(objs, c) for c in ("istiod", "cni", "ztunnel"))
    if ztunnel is None:
        gaps.append("no HelmRelease installs ztunnel (the proxy that enforces them)")
    if cni is None:
        gaps.append("no HelmRelease installs istio-cni (which redirects pod traffic to ztunnel)")
    elif cni.get("profile") != "ambient" and not (cni.get("ambient") or {}).get("enabled"):
        gaps.append("istio-cni runs without profile: ambient")
    env = ((istiod or {}).get("pilot") or {}).get("env") or {}
    if (istiod or {}).get("profile") != "ambient" and str(
        env.get("PILOT_ENABLE_AMBIENT")
    ) != "true":
        gaps.append("istiod runs without profile: ambient")
    return gaps


@functools.cache
def _declaring_files(root: str, env: str) -> dict[tuple[str, str, str], str]:
    """(kind, name, namespace) -> the repository file declaring it, under platform/ and the
    environment's directory (for messages that name the file to change)."""
    found: dict[tuple[str, str, str], str] = {}
    base = Path(root)
    for top in ("platform", f"environments/{env}" if env else ""):
        for path in sorted((base / top).rglob("*.yaml")) if top else []:
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError:
                continue
            for d in docs:
                if isinstance(d, dict) and isinstance(d.get("metadata"), dict):
                    meta = d["metadata"]
                    key = (str(d.get("kind")), str(meta.get("name")), str(meta.get("namespace")))
                    found.setdefault(key, str(path.relative_to(base)))
    return found


def _where(o: Obj, ctx: Context) -> str:
    ns = str((o.body.get("metadata") or {}).get("namespace"))
    file = _declaring_files(str(paths.ROOT), ctx.env).get((o.kind, o.name, ns))
    return f"{file or o.source}: {o.ref} (namespace {ns})"


def _l7_fields(policy: dict[str, Any]) -> Iterator[str]:
    for i, rule in enumerate((policy.get("spec") or {}).get("rules") or []):
        for j, to in enumerate(rule.get("to") or []):
            for key in sorted(set(to.get("operation") or {}) & L7_OPERATION):
                yield f"spec.rules.{i}.to.{j}.operation.{key}"
        for j, src in enumerate(rule.get("from") or []):
            for key in sorted(set(src.get("source") or {}) & L7_SOURCE):
                yield f"spec.rules.{i}.from.{j}.source.{key}"
        for j, cond in enumerate(rule.get("when") or []):
            if str(cond.get("key", "")).startswith("request."):
                yield f"spec.rules.{i}.when.{j}.key"


def _in_mesh(labels: dict[str, str]) -> bool:
    return (
        labels.get(AMBIENT_LABEL) == "ambient"
        or labels.get("istio-injection") == "enabled"
        or "istio.io/rev" in labels
    )


def check_mesh_enforced(objs: list[Obj], ctx: Context) -> Problems:
    """An mTLS or authorization policy must sit where a proxy enforces it: an ambient namespace
    with ztunnel and istio-cni installed (L4 rules only, unless a waypoint serves it), or a
    sidecar-injected one (with istio-cni where Pod Security restricted forbids istio-init)."""
    mesh_policies = [
        o
        for o in objs
        if o.kind in MESH_POLICY_KINDS
        and (o.body.get("metadata") or {}).get("namespace") != ISTIO_ROOT_NAMESPACE
    ]
    for o in mesh_policies:
        ns = str((o.body.get("metadata") or {}).get("namespace"))
        labels = _namespace_labels(objs, ns)
        where = _where(o, ctx)
        if labels is None:
            yield (
                where,
                (
                    f"namespace {ns} is not declared in the environment, so nothing puts its "
                    "pods in the mesh: no proxy enforces this policy"
                ),
            )
        elif labels.get(AMBIENT_LABEL) == "ambient":
            gaps = ambient_gaps(objs)
            if gaps:
                yield (
                    where,
                    (
                        f"namespace {ns} is in ambient mode, but {'; '.join(gaps)}: no proxy "
                        "enforces this policy"
                    ),
                )
            elif o.kind == "AuthorizationPolicy" and WAYPOINT_LABEL not in labels:
                for field in _l7_fields(o.body):
                    yield (
                        f"{where}.{field}",
                        (
                            f"an L7 condition in ambient namespace {ns} without a waypoint: "
                            "ztunnel enforces L4 only and fails closed on it (the rule becomes a "
                            "DENY); "
                            f"drop it or add a waypoint ({WAYPOINT_LABEL})"
                        ),
                    )
        elif _in_mesh(labels):
            restricted = labels.get("pod-security.kubernetes.io/enforce") == "restricted"
            if restricted and _release_values(objs, "cni") is None:
                yield (
                    where,
                    (
                        f"namespace {ns} injects sidecars under Pod Security restricted, which "
                        "refuses their istio-init container (NET_ADMIN): install istio-cni"
                    ),
                )
        else:
            yield (
                where,
                (
                    f"no proxy enforces it: namespace {ns} has neither {AMBIENT_LABEL}: ambient "
                    "nor sidecar injection (istio-injection: enabled or istio.io/rev)"
                ),
            )
    # STRICT mTLS refuses plaintext: every caller the policies admit must be in the mesh too.
    for o in (p for p in mesh_policies if p.kind == "AuthorizationPolicy"):
        for i, rule in enumerate((o.body.get("spec") or {}).get("rules") or []):
            for j, src in enumerate(rule.get("from") or []):
                for principal in (src.get("source") or {}).get("principals") or []:
                    caller = principal.split("/ns/", 1)[-1].split("/", 1)[0]
                    caller_labels = _namespace_labels(objs, caller)
                    if caller_labels is not None and not _in_mesh(caller_labels):
                        yield (
                            f"{_where(o, ctx)}.spec.rules.{i}.from.{j}.source.principals",
                            (
                                f"{principal}: namespace {caller} is outside the mesh, so its "
                                "requests carry no mTLS identity and STRICT mTLS refuses them; "
                                f"label it {AMBIENT_LABEL}: ambient"
                            ),
                        )


# --- what Knative and KServe make of the InferenceServices ------------------------------------


def _one(objs: list[Obj], kind: str) -> Obj | None:
    found = [o for o in objs if o.kind == kind]
    return found[0] if len(found) == 1 else None


def _knative_isvcs(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o.kind == "InferenceService" and revision.is_knative(o.body)]


def _values_file(obj: Obj) -> str:
    """The chart values file an InferenceService was rendered from."""
    return obj.source.split(" -> ")[0]


def _env_file(ctx: Context, layer_file: str, base: str) -> str:
    """The environment's file when it has one (its overlay), else the shared base."""
    own = f"environments/{ctx.env}/{layer_file}"
    return own if ctx.env and (paths.ROOT / own).is_file() else base


def _kserve_values(objs: list[Obj]) -> dict[str, Any]:
    """The kserve-resources chart values the environment's Flux layer carries (generated
    ConfigMap kserve-resources-values-<hash>, the file Argo CD reads too)."""
    for o in objs:
        if o.kind == "ConfigMap" and o.name.startswith("kserve-resources-values"):
            return yaml.safe_load((o.body.get("data") or {}).get("values.yaml") or "") or {}
    return {}


def check_knative_features(objs: list[Obj], ctx: Context) -> Problems:
    isvcs = _knative_isvcs(objs)
    if not isvcs:
        return
    serving = _one(objs, "KnativeServing")
    where = _env_file(
        ctx, "platform/configs/knative-serving.yaml", "platform/configs/knative-serving.yaml"
    )
    if serving is None:
        yield "KnativeServing", "exactly one is needed to tell which pod fields Knative admits"
        return
    flags = admission.features(serving.body)
    used: set[str] = set()
    for isvc in isvcs:
        predictor = (isvc.body.get("spec") or {}).get("predictor") or {}
        used |= admission.needed(predictor)
        for r in admission.refusals(predictor, flags):
            key = r.path if r.path.startswith("model.") else f"predictor.{r.path}"
            field = f"{_values_file(isvc)}: {key} ({isvc.ref} spec.predictor.{r.path})"
            if r.feature:
                why = (
                    f"Knative Serving refuses the revision unless feature {r.feature} is enabled "
                    f"in KnativeServing spec.config.features ({where})"
                )
                yield field, why + (f"; {r.detail}" if r.detail else "")
            else:
                yield field, r.detail
    for feature in sorted(set(admission.POD_FIELD_FEATURES.values()) - used):
        if admission.enabled(flags, feature):
            yield (
                f"{where}: KnativeServing spec.config.features.{feature}",
                "enabled, but no InferenceService of the environment sets its pod field: Knative "
                "admits it for every Service; enable exactly the features the models use",
            )


def _revision_pods(objs: list[Obj]) -> Iterator[tuple[Obj, dict[str, Any]]]:
    serving = _one(objs, "KnativeServing")
    kserve_values = _kserve_values(objs)
    for isvc in _knative_isvcs(objs):
        yield isvc, revision.pod(isvc.body, serving.body if serving else {}, kserve_values)


def _named(path: str, pod: dict[str, Any]) -> str:
    """spec.containers.1... -> spec.containers[queue-proxy]..., for readable messages."""
    parts = path.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("containers", "initContainers") and parts[i + 1].isdigit():
            name = pod["spec"][part][int(parts[i + 1])]["name"]
            return ".".join([*parts[:i], f"{part}[{name}]", *parts[i + 2 :]])
    return path


REVISION_POD_CHECKS = (
    "check_run_as_non_root",
    "check_no_privilege_escalation",
    "check_capabilities",
    "check_seccomp",
    "check_host_access",
)


def check_revision_pod_security(objs: list[Obj], ctx: Context) -> Problems:
    for isvc, pod in _revision_pods(objs):
        prefix = f"{_values_file(isvc)}: revision pod of {isvc.ref}"
        for name in REVISION_POD_CHECKS:
            for path, problem in globals()[name](pod, ctx):
                yield f"{prefix}: {_named(path, pod)}", problem


def check_qos(objs: list[Obj], ctx: Context) -> Problems:
    """Requests == limits on the model promise the Guaranteed QoS class; the pod only gets it
    when every container, Knative's queue-proxy and KServe's init container included, does."""
    knative = _env_file(
        ctx, "platform/configs/knative-serving.yaml", "platform/configs/knative-serving.yaml"
    )
    kserve = f"environments/{ctx.env}/platform/kserve/values/kserve-resources.yaml"
    fixes = {
        revision.QUEUE_PROXY: f"set KnativeServing spec.config.deployment queue-sidecar-"
        f"{{cpu,memory}}-request equal to queue-sidecar-{{cpu,memory}}-limit ({knative})",
        revision.STORAGE_INITIALIZER: f"set kserve.storage.resources requests equal to limits "
        f"({kserve})",
        revision.MODEL_CONTAINER: "set model.resources requests equal to limits",
    }
    for isvc, pod in _revision_pods(objs):
        model = ((isvc.body.get("spec") or {}).get("predictor") or {}).get("model") or {}
        if revision.guaranteed_gaps(model.get("resources") or {}):
            continue  # no promise made
        for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
            gaps = revision.guaranteed_gaps(c.get("resources") or {})
            if gaps:
                yield (
                    f"{_values_file(isvc)}: model.resources ({isvc.ref})",
                    f"requests == limits promise the Guaranteed QoS class, but {c['name']} has "
                    f"{', '.join(gaps)}, so the pod is Burstable: {fixes[c['name']]}",
                )


# --- where the models come from -----------------------------------------------------------------

# Schemes KServe's storage-initializer downloads with credentials from the predictor's service
# account (kserve pkg/credentials: the Secrets the ServiceAccount lists).
CREDENTIAL_SCHEMES = ("s3://", "gs://", "hdfs://", "webhdfs://")
SINGLE_NODE_ACCESS = frozenset({"ReadWriteOnce", "ReadWriteOncePod"})


def _storage_uris(isvc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(field path, storageUri, predictor) of the stable and every canary predictor."""
    spec = isvc.get("spec") or {}
    predictor = spec.get("predictor") or {}
    uri = (predictor.get("model") or {}).get("storageUri")
    if uri:
        yield "model.storageUri", str(uri), predictor
    for i, canary in enumerate(spec.get("canary") or []):
        pred = canary.get("predictor") or {}
        uri = (pred.get("model") or {}).get("storageUri")
        if uri:
            yield f"canary.storageUri (spec.canary.{i})", str(uri), {**predictor, **pred}


def check_storage_provided(objs: list[Obj], ctx: Context) -> Problems:
    """Every storageUri names something the environment declares: the claim of a pvc:// URI
    (with an access mode its replicas can share), the service account holding credentials of
    a bucket, modelcar support for oci://."""
    layer = f"environments/{ctx.env}/platform/configs" if ctx.env else "the environment"
    kserve_values = _kserve_values(objs)
    for isvc in (o for o in objs if o.kind == "InferenceService"):
        namespace = (isvc.body.get("metadata") or {}).get("namespace")
        declared = {
            (o.kind, o.name): o.body
            for o in objs
            if (o.body.get("metadata") or {}).get("namespace") == namespace
        }
        for key, uri, predictor in _storage_uris(isvc.body):
            field = f"{_values_file(isvc)}: {key} ({isvc.ref})"
            if uri.startswith("pvc://"):
                claim = uri.removeprefix("pvc://").split("/", 1)[0]
                pvc = declared.get(("PersistentVolumeClaim", claim))
                if pvc is None:
                    yield (
                        field,
                        (
                            f"{uri}: no PersistentVolumeClaim {claim!r} in namespace "
                            f"{namespace!r}: declare it in {layer}, with the model namespace "
                            "(the pod would stay Pending)"
                        ),
                    )
                    continue
                modes = set((pvc.get("spec") or {}).get("accessModes") or [])
                replicas = int(predictor.get("maxReplicas") or predictor.get("minReplicas") or 1)
                if replicas > 1 and modes <= SINGLE_NODE_ACCESS:
                    yield (
                        field,
                        (
                            f"{uri}: claim {claim!r} is {sorted(modes)}, but up to {replicas} "
                            "replicas may land on different nodes: ReadWriteMany or ReadOnlyMany, "
                            "or maxReplicas 1"
                        ),
                    )
            elif uri.startswith(CREDENTIAL_SCHEMES):
                sa_name = predictor.get("serviceAccountName")
                sa = declared.get(("ServiceAccount", str(sa_name))) if sa_name else None
                if not sa or not sa.get("secrets"):
                    yield (
                        field,
                        (
                            f"{uri}: expected predictor.serviceAccountName naming a ServiceAccount "
                            f"declared in {layer} (namespace {namespace!r}) that lists the Secret "
                            "with the storage credentials; KServe's storage-initializer reads them "
                            f"there (got {sa_name or 'none'})"
                        ),
                    )
            elif uri.startswith("oci://"):
                storage = (kserve_values.get("kserve") or {}).get("storage") or {}
                if storage.get("enableModelcar") is False:
                    yield (
                        field,
                        (
                            f"{uri}: expected kserve.storage.enableModelcar true in "
                            f"environments/{ctx.env}/platform/kserve/values/kserve-resources.yaml"
                        ),
                    )


# --- the rule table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    model_namespaces: frozenset[str]  # where InferenceServices run
    restricted_namespaces: frozenset[str]  # namespaces that must enforce PSS restricted
    env: str = ""  # the environment, to name its files in messages


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    kinds: frozenset[str]  # object kinds it applies to; empty: an environment rule
    check: Callable[..., Problems]


RULES: tuple[Rule, ...] = (
    Rule("PSS-NONROOT", "containers run as non-root", POD_KINDS, check_run_as_non_root),
    Rule("PSS-PRIV-ESC", "no privilege escalation, not privileged", POD_KINDS,
         check_no_privilege_escalation),
    Rule("PSS-CAPS", "capabilities: drop ALL, add at most NET_BIND_SERVICE", POD_KINDS,
         check_capabilities),
    Rule("PSS-SECCOMP", "seccomp profile RuntimeDefault (or Localhost)", POD_KINDS, check_seccomp),
    Rule("PSS-HOST", "no host network/PID/IPC, no hostPath volumes", POD_KINDS, check_host_access),
    Rule("RO-ROOTFS", "read-only root filesystem", POD_KINDS, check_read_only_root),
    Rule("RESOURCES", "cpu and memory requests and limits on every container", POD_KINDS,
         check_resources),
    Rule("IMAGE-PINNED", "images carry a version tag or digest, never latest", POD_KINDS,
         check_image_pinned),
    Rule("CREDS-BY-REF", "credential env vars come from a Secret, never a literal", POD_KINDS,
         check_credentials_by_reference),
    Rule("SECRET-LITERAL", "no credential committed in a Secret object", frozenset({"Secret"}),
         check_secret_objects),
    Rule("NS-RESTRICTED", "model namespaces enforce Pod Security restricted",
         frozenset({"Namespace"}), check_model_namespace_restricted),
    Rule("NS-DECLARED", "the model namespace is declared", frozenset(), check_namespace_declared),
    Rule("MTLS-STRICT", "namespace-wide Istio mTLS STRICT in model namespaces", frozenset(),
         check_mtls_strict),
    Rule("AUTHZ-CALLERS", "only the gateway, activator, autoscaler and Prometheus may call",
         frozenset(), check_authorization),
    Rule("NETPOL", "default-deny ingress; every allow names sources and ports", frozenset(),
         check_network_policies),
    Rule("MESH-ENFORCED", "mTLS and authorization policies sit where a proxy enforces them "
         "(ambient ztunnel: L4 only; or sidecars), their callers in the mesh", frozenset(),
         check_mesh_enforced),
    Rule("KNATIVE-FEATURES", "Knative admits the predictors' pod fields (spec.config.features); "
         "no pod-spec feature enabled that no model uses", frozenset(), check_knative_features),
    Rule("REVISION-PSS", "the revision pod (model, queue-proxy, storage-initializer) meets Pod "
         "Security restricted", frozenset(), check_revision_pod_security),
    Rule("STORAGE-PROVIDED", "every storageUri names storage the environment declares (claim, "
         "credentials, modelcar)", frozenset(), check_storage_provided),
    Rule("QOS-GUARANTEED", "a model with requests == limits gets the Guaranteed QoS class for "
         "its whole revision pod", frozenset(), check_qos),
)  # fmt: skip


def check_objects(objs: list[Obj], ctx: Context, environment: bool) -> list[Violation]:
    """Every object rule on every object; the environment rules too when `environment`."""
    out: list[Violation] = []
    for rule in RULES:
        if rule.kinds:
            for obj in objs:
                if obj.kind in rule.kinds:
                    where = f"{obj.source}: {obj.ref}"
                    out += [Violation(rule.id, where, f, m) for f, m in rule.check(obj.body, ctx)]
        elif environment:
            where = objs[0].source.split(" -> ")[0] if objs else "?"
            out += [Violation(rule.id, where, f, m) for f, m in rule.check(objs, ctx)]
    return out


def context(env: str) -> Context:
    repo = Repo.discover()  # until the caller passes its Repo
    namespace = str(render.environment(repo, env).get("namespace", "models"))
    return Context(frozenset({namespace}), frozenset({namespace, "kserve-monitoring"}), env)


def check_environment(env: str) -> list[Violation]:
    repo = Repo.discover()  # until the caller passes its Repo
    return check_objects(render.environment_objects(repo, env), context(env), environment=True)


def check_chart_scenarios() -> list[Violation]:
    """Each chart scenario as rendered: object rules only (a scenario is not an environment)."""
    repo = Repo.discover()  # until the caller passes its Repo
    out: list[Violation] = []
    ctx = Context(frozenset(), frozenset())
    for scenario in sorted((repo.model_chart / "ci").glob("*-values.yaml")):
        objs = render.render_chart(
            repo,
            repo.model_chart,
            render.model_values(repo, scenario),
            repo.model_chart.name,
            "default",
            paths.rel(scenario),
        )
        out += check_objects(objs, ctx, environment=False)
    return out


# --- repository scan for credentials ----------------------------------------------------------

SCAN_SKIP_DIRS = {
    ".git",
    ".venv",
    ".venv-mlserver",
    ".cache",
    "reports",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
}
SCAN_SKIP_SUFFIXES = {".joblib", ".png", ".pkl", ".whl", ".gz", ".zip"}
ALLOWLIST = "config/secret-scan-allowlist.yaml"
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("AWS-ACCESS-KEY", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("PRIVATE-KEY", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    ("GITHUB-TOKEN", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("SLACK-TOKEN", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")),
)
# A credential-named key with a literal value, in configuration files (YAML, JSON, env, ini).
CONFIG_SUFFIXES = {".yaml", ".yml", ".json", ".env", ".ini", ".cfg", ".toml", ".properties"}
_KEYED = re.compile(
    r"""(?ix)["']?(password|passwd|secret|secret[_-]?access[_-]?key|api[_-]?key|token
    |auth[_-]?token|client[_-]?secret)["']?\s*[:=]\s*["']?([^\s"'#,}]*)"""
)
# Values that point at a secret rather than being one.
_REFERENCE = re.compile(r"^(\$|\{\{|<|secretKeyRef|valueFrom|null$|none$|true$|false$|$)", re.I)


def _allowlist(root: Path) -> list[dict[str, str]]:
    path = root / ALLOWLIST
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get("allow") or []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"path", "rule", "reason"} <= e.keys():
            raise RenderError(f"{ALLOWLIST}: allow.{i}: expected path, rule and reason")
    return entries


def scan_repository(root: Path | None = None) -> list[Violation]:
    """Every file of the repository (not the virtualenv, caches or reports) against the credential
    patterns; a finding is dropped when an allowlist entry names its file (glob) and rule."""
    root = root or paths.ROOT
    allow = _allowlist(root)
    out: list[Violation] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or SCAN_SKIP_DIRS & set(rel.parts[:-1]):
            continue
        if path.suffix in SCAN_SKIP_SUFFIXES:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            found = [rule for rule, pattern in SECRET_PATTERNS if pattern.search(line)]
            if path.suffix in CONFIG_SUFFIXES:
                for match in _KEYED.finditer(line):
                    if not _REFERENCE.match(match.group(2)):
                        found.append("KEYED-LITERAL")
            for rule in found:
                if any(e["rule"] == rule and fnmatch.fnmatch(str(rel), e["path"]) for e in allow):
                    continue
                out.append(Violation(rule, f"{rel}:{lineno}", "line", "looks like a credential"))
    return out


def problems(envs: list[str]) -> list[str]:
    """Every violation as a message, for `make validate`; what fails to render is left to the
    checks that already report it there."""
    found: list[Violation] = []
    checks = [functools.partial(check_environment, env) for env in envs]
    for check in [*checks, check_chart_scenarios]:
        try:
            found += check()
        except RenderError:
            continue
    return [str(v) for v in found + scan_repository()]


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", help="environment (default: all)")
    parser.add_argument("--rules", action="store_true", help="list the rules and exit")
    args = parser.parse_args(argv)
    if args.rules:
        for rule in RULES:
            scope = ", ".join(sorted(rule.kinds)) or "environment"
            print(f"{rule.id:<15} {rule.description} ({scope})")
        print(f"{'SECRET-SCAN':<15} repository files: {', '.join(r for r, _ in SECRET_PATTERNS)}")
        return 0
    envs = args.env or repo.environment_names
    found: list[Violation] = []
    try:
        for env in envs:
            found += check_environment(env)
        if not args.env:
            found += check_chart_scenarios()
        found += scan_repository()
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for v in found:
        print(v, file=sys.stderr)
    scope = ", ".join(envs) + ("" if args.env else " + chart scenarios")
    print(f"{len(found)} policy violation(s) in {scope} and the repository scan")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
