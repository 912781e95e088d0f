"""The model namespace's network and mesh policies: namespace-wide STRICT mTLS, only the known
callers allowed (Istio authorization, Kubernetes network policies), and each such policy where
a proxy enforces it (Istio ambient's ztunnel, L4 only without a waypoint; or sidecars)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import yaml

from kserve_gitops.checks.rules import Context, Problems, chart_values, namespace_labels
from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import Obj

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


def _in(objs: list[Obj], kind: str, namespace: str) -> list[Obj]:
    return [
        o
        for o in objs
        if o.kind == kind and (o.body.get("metadata") or {}).get("namespace") == namespace
    ]


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


def _principal_namespace(principal: str) -> str:
    """cluster.local/ns/<namespace>/sa/<account> -> <namespace>."""
    return principal.split("/ns/", 1)[-1].split("/", 1)[0]


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
        namespaces = {_principal_namespace(p) for p in ALLOWED_PRINCIPALS}
        ambient = (namespace_labels(objs, ns) or {}).get(AMBIENT_LABEL) == "ambient"
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


def _chart_of(objs: list[Obj], spec: dict[str, Any]) -> str | None:
    """The upstream chart a HelmRelease installs: `chart.spec.chart`, or for a `chartRef` the
    last path element of the OCIRepository's URL (oci://ghcr.io/istio/release/charts/ztunnel)."""
    ref = spec.get("chartRef")
    if not ref:
        return ((spec.get("chart") or {}).get("spec") or {}).get("chart")
    for o in objs:
        if o.kind == ref.get("kind") and o.name == ref.get("name"):
            return str((o.body.get("spec") or {}).get("url", "")).rstrip("/").rsplit("/", 1)[-1]
    return None


def _release_values(objs: list[Obj], chart: str) -> dict[str, Any] | None:
    """Values of the Flux HelmRelease installing upstream `chart`, None when none installs it."""
    for o in objs:
        spec = o.body.get("spec") or {}
        if o.kind != "HelmRelease" or _chart_of(objs, spec) != chart:
            continue
        values: dict[str, Any] = {}
        for ref in spec.get("valuesFrom") or []:
            cm = next(
                (c for c in objs if c.kind == "ConfigMap" and c.name.startswith(ref["name"])),
                None,
            )
            if cm is not None:
                values |= chart_values(cm)
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
def _declaring_files(repo: Repo, env: str) -> dict[tuple[str, str, str], str]:
    """(kind, name, namespace) -> the repository file declaring it, under the bases (platform/,
    environments/base/) and the environment's directory (for messages that name the file to
    change)."""
    found: dict[tuple[str, str, str], str] = {}
    for top in ("platform", "environments/base", *([f"environments/{env}"] if env else [])):
        for path in sorted((repo.root / top).rglob("*.yaml")):
            try:
                docs = list(yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader))
            except yaml.YAMLError:
                continue
            for d in docs:
                if isinstance(d, dict) and isinstance(d.get("metadata"), dict):
                    meta = d["metadata"]
                    key = (str(d.get("kind")), str(meta.get("name")), str(meta.get("namespace")))
                    found.setdefault(key, str(path.relative_to(repo.root)))
    return found


def _where(o: Obj, ctx: Context) -> str:
    ns = str((o.body.get("metadata") or {}).get("namespace"))
    file = _declaring_files(ctx.repo, ctx.env).get((o.kind, o.name, ns))
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


def _unenforced(o: Obj, objs: list[Obj]) -> Iterator[tuple[str, str]]:
    """(field under the policy, problem) when no proxy enforces the mesh policy `o`."""
    ns = str((o.body.get("metadata") or {}).get("namespace"))
    labels = namespace_labels(objs, ns)
    if labels is None:
        yield (
            "",
            (
                f"namespace {ns} is not declared in the environment, so nothing puts its "
                "pods in the mesh: no proxy enforces this policy"
            ),
        )
    elif labels.get(AMBIENT_LABEL) == "ambient":
        gaps = ambient_gaps(objs)
        if gaps:
            yield (
                "",
                (
                    f"namespace {ns} is in ambient mode, but {'; '.join(gaps)}: no proxy "
                    "enforces this policy"
                ),
            )
        elif o.kind == "AuthorizationPolicy" and WAYPOINT_LABEL not in labels:
            for field in _l7_fields(o.body):
                yield (
                    f".{field}",
                    (
                        f"an L7 condition in ambient namespace {ns} without a waypoint: ztunnel "
                        "enforces L4 only and fails closed on it (the rule becomes a DENY); "
                        f"drop it or add a waypoint ({WAYPOINT_LABEL})"
                    ),
                )
    elif _in_mesh(labels):
        restricted = labels.get("pod-security.kubernetes.io/enforce") == "restricted"
        if restricted and _release_values(objs, "cni") is None:
            yield (
                "",
                (
                    f"namespace {ns} injects sidecars under Pod Security restricted, which "
                    "refuses their istio-init container (NET_ADMIN): install istio-cni"
                ),
            )
    else:
        yield (
            "",
            (
                f"no proxy enforces it: namespace {ns} has neither {AMBIENT_LABEL}: ambient "
                "nor sidecar injection (istio-injection: enabled or istio.io/rev)"
            ),
        )
    # STRICT mTLS refuses plaintext: every caller the policy admits must be in the mesh too.
    if o.kind != "AuthorizationPolicy":
        return
    for i, rule in enumerate((o.body.get("spec") or {}).get("rules") or []):
        for j, src in enumerate(rule.get("from") or []):
            for principal in (src.get("source") or {}).get("principals") or []:
                caller = _principal_namespace(principal)
                caller_labels = namespace_labels(objs, caller)
                if caller_labels is not None and not _in_mesh(caller_labels):
                    yield (
                        f".spec.rules.{i}.from.{j}.source.principals",
                        (
                            f"{principal}: namespace {caller} is outside the mesh, so its "
                            "requests carry no mTLS identity and STRICT mTLS refuses them; "
                            f"label it {AMBIENT_LABEL}: ambient"
                        ),
                    )


def check_mesh_enforced(objs: list[Obj], ctx: Context) -> Problems:
    """An mTLS or authorization policy must sit where a proxy enforces it: an ambient namespace
    with ztunnel and istio-cni installed (L4 rules only, unless a waypoint serves it), or a
    sidecar-injected one (with istio-cni where Pod Security restricted forbids istio-init)."""
    for o in objs:
        namespace = (o.body.get("metadata") or {}).get("namespace")
        if o.kind not in MESH_POLICY_KINDS or namespace == ISTIO_ROOT_NAMESPACE:
            continue
        for field, problem in _unenforced(o, objs):
            yield f"{_where(o, ctx)}{field}", problem
