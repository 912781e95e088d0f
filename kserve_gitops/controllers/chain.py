"""The chain the controllers derive from our declarations, read from the cluster:

    KnativeServing -> (operator) Serving's ConfigMaps
    InferenceService -> (KServe) Knative Service -> (Knative) Configuration -> Revision
      -> Deployment -> pods, PodAutoscaler, ServerlessService; Route -> KIngress

`observe` reads every link with its status conditions; `verdict` says whether the
InferenceService is Ready, held back only by what the kwok provider cannot run (the KIngress
nothing reconciles: net-istio's controller is not buildable, and no Istio data plane runs), or
failed by anything else, naming the condition.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kserve_gitops.base.wait import wait_until

KNATIVE_NS = "knative-serving"
NET = "networking.internal.knative.dev"
INGRESS_CLASS = "networking.knative.dev/ingress.class"


@dataclass
class Link:
    kind: str
    ref: str  # namespace/name
    conditions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cond(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.conditions if c.get("type") == type_), None)

    def true(self, type_: str) -> bool:
        return (self.cond(type_) or {}).get("status") == "True"

    def lines(self) -> list[str]:
        out = [f"{self.kind} {self.ref}"]
        for c in self.conditions:
            why = " ".join(x for x in (c.get("reason"), c.get("message")) if x)
            out.append(f"    {c.get('type')}={c.get('status')}" + (f"  ({why})" if why else ""))
        if not self.conditions:
            out.append("    (no conditions: nothing has reconciled it)")
        out += [f"    - {note}" for note in self.notes]
        return out


@dataclass
class Verdict:
    status: str  # "ready" | "held" | "failed" | "pending"
    reason: str


def _conds(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(((obj.get("status") or {}).get("conditions")) or [])


def _ref(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


class Reader:
    def __init__(self, kubeconfig: str) -> None:
        api = config.new_client_from_config(config_file=kubeconfig)
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

    def list(self, group: str, version: str, plural: str, ns: str, label: str = "") -> list[Any]:
        try:
            got = self.custom.list_namespaced_custom_object(
                group, version, ns, plural, label_selector=label
            )
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        return list(got.get("items") or [])

    def get(self, group: str, version: str, plural: str, ns: str, name: str) -> Any:
        try:
            return self.custom.get_namespaced_custom_object(group, version, ns, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def knative_serving(r: Reader) -> list[Link]:
    """The KnativeServing and whether Serving's ConfigMaps carry every key of spec.config."""
    links = []
    for ks in r.list("operator.knative.dev", "v1beta1", "knativeservings", KNATIVE_NS):
        link = Link("KnativeServing", _ref(ks), _conds(ks))
        wanted = (ks.get("spec") or {}).get("config") or {}
        total, missing = 0, []
        for cm_name, data in wanted.items():
            try:
                live = r.core.read_namespaced_config_map(f"config-{cm_name}", KNATIVE_NS).data
            except ApiException:
                live = None
            for key, value in (data or {}).items():
                total += 1
                if (live or {}).get(key) != str(value):
                    missing.append(f"config-{cm_name}.{key}")
        link.notes.append(
            f"spec.config: {total - len(missing)}/{total} keys carried into Serving's ConfigMaps"
            + (f"; missing or different: {', '.join(missing)}" if missing else "")
        )
        links.append(link)
    return links


def _pod_note(pod: Any) -> str:
    spec, st = pod.spec, pod.status
    ready = next((c.status for c in st.conditions or [] if c.type == "Ready"), "?")
    inits = [c.name for c in spec.init_containers or []]
    return (
        f"Pod {pod.metadata.name}: phase {st.phase}, Ready={ready}, node {spec.node_name}, "
        f"containers {[c.name for c in spec.containers]}" + (f", init {inits}" if inits else "")
    )


def observe(r: Reader, ns: str, name: str) -> list[Link]:
    links = knative_serving(r)
    isvc = r.get("serving.kserve.io", "v1beta1", "inferenceservices", ns, name)
    if isvc is None:
        return [*links, Link("InferenceService", f"{ns}/{name}", notes=["not found"])]
    link = Link("InferenceService", _ref(isvc), _conds(isvc))
    st = isvc.get("status") or {}
    link.notes.append(f"url {st.get('url')}")
    for comp, cs in (st.get("components") or {}).items():
        traffic = ", ".join(
            f"{t.get('revisionName')} {t.get('percent')}%"
            f"{' (latest)' if t.get('latestRevision') else ''}"
            for t in cs.get("traffic") or []
        )
        link.notes.append(
            f"{comp}: latestCreatedRevision {cs.get('latestCreatedRevision')}, "
            f"latestReadyRevision {cs.get('latestReadyRevision')}, "
            f"traffic [{traffic}]"
        )
    links.append(link)
    kn = "serving.knative.dev"
    for ksvc in r.list(kn, "v1", "services", ns, f"serving.kserve.io/inferenceservice={name}"):
        kname = ksvc["metadata"]["name"]
        link = Link("Knative Service", _ref(ksvc), _conds(ksvc))
        link.notes.append(
            "traffic "
            + ", ".join(
                f"{t.get('revisionName')} {t.get('percent')}%"
                + (f" tag {t['tag']}" if t.get("tag") else "")
                for t in (ksvc.get("status") or {}).get("traffic") or []
            )
        )
        links.append(link)
        for cfg in r.list(kn, "v1", "configurations", ns, f"serving.knative.dev/service={kname}"):
            links.append(Link("Configuration", _ref(cfg), _conds(cfg)))
            by_cfg = f"serving.knative.dev/configuration={cfg['metadata']['name']}"
            revs = r.list(kn, "v1", "revisions", ns, by_cfg)
            for rev in sorted(revs, key=lambda x: x["metadata"]["name"]):
                links += revision_links(r, ns, rev)
        for route in r.list(kn, "v1", "routes", ns, f"serving.knative.dev/service={kname}"):
            links.append(Link("Route", _ref(route), _conds(route)))
            by_route = f"serving.knative.dev/route={route['metadata']['name']}"
            for ing in r.list(NET, "v1alpha1", "ingresses", ns, by_route):
                cls = (ing["metadata"].get("annotations") or {}).get(INGRESS_CLASS)
                links.append(Link("KIngress", _ref(ing), _conds(ing), [f"ingress.class {cls}"]))
    return links


def revision_links(r: Reader, ns: str, rev: Mapping[str, Any]) -> list[Link]:
    rname = rev["metadata"]["name"]
    label = f"serving.knative.dev/revision={rname}"
    out = [
        Link(
            "Revision",
            _ref(rev),
            _conds(rev),
            [f"image {c.get('image')}" for c in (rev.get("spec") or {}).get("containers") or []],
        )
    ]
    for pa in r.list("autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers", ns, label):
        st = pa.get("status") or {}
        out.append(
            Link(
                "PodAutoscaler",
                _ref(pa),
                _conds(pa),
                [f"desiredScale {st.get('desiredScale')}, actualScale {st.get('actualScale')}"],
            )
        )
    for sks in r.list(NET, "v1alpha1", "serverlessservices", ns, label):
        out.append(
            Link(
                "ServerlessService",
                _ref(sks),
                _conds(sks),
                [f"mode {(sks.get('spec') or {}).get('mode')}"],
            )
        )
    for dep in r.apps.list_namespaced_deployment(ns, label_selector=label).items:
        d = r.api.sanitize_for_serialization(dep)
        st = d.get("status") or {}
        replicas = f"replicas {st.get('readyReplicas', 0)}/{d['spec'].get('replicas')} ready"
        link = Link("Deployment", _ref(d), _conds(d), [replicas])
        link.notes += [
            _pod_note(p) for p in r.core.list_namespaced_pod(ns, label_selector=label).items
        ]
        out.append(link)
    return out


# Kinds whose conditions follow from the KIngress: Knative's Route waits for the ingress to be
# programmed, the Service for its Route, KServe for the Service and its own ingress.
INGRESS_BOUND = {
    "Route": {"IngressReady", "Ready", "AllTrafficAssigned", "CertificateProvisioned"},
    "Knative Service": {"RoutesReady", "Ready"},
    "InferenceService": {"Ready", "PredictorReady", "IngressReady", "RoutesReady"},
}
HELD_BY = (
    "the KIngress {ref} has no Ready condition: nothing reconciles it, since net-istio's "
    "controller is not buildable from the Go module proxy (knative.dev/net-istio is not "
    "served) and no Istio data plane (Envoy) runs here"
)


def verdict(links: list[Link]) -> Verdict:
    """ready: InferenceService Ready=True. held: everything short of the ingress is True
    (Revision Ready, Deployment Available, pods Running) and the only conditions not True
    follow from the unreconciled KIngress. failed: any other condition not True. pending:
    a link is still missing."""
    isvc = next((x for x in links if x.kind == "InferenceService"), None)
    if isvc is None or not isvc.conditions:
        return Verdict("pending", "the InferenceService has no conditions yet")
    if isvc.true("Ready"):
        return Verdict("ready", "InferenceService Ready=True")
    kinds = {x.kind for x in links}
    for needed in ("Knative Service", "Revision", "Deployment", "Route", "KIngress"):
        if needed not in kinds:
            return Verdict("pending", f"no {needed} yet")
    ingress = [x for x in links if x.kind == "KIngress"]
    held = [x for x in ingress if not x.true("Ready")]
    problems = []
    for link in links:
        if link.kind == "KIngress":
            continue
        for c in link.conditions:
            if c.get("status") == "True" or c.get("severity") in ("Info", "Warning"):
                continue
            if held and c.get("type") in INGRESS_BOUND.get(link.kind, set()):
                continue
            why = ": ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)
            problems.append(f"{link.kind} {link.ref} {c.get('type')}={c.get('status')} ({why})")
    for link in links:
        if link.kind == "Deployment" and not any("phase Running" in n for n in link.notes):
            problems.append(f"Deployment {link.ref}: no pod Running")
    if problems:
        return Verdict("failed", "; ".join(problems))
    ready = isvc.cond("Ready") or {}
    why = ": ".join(str(x) for x in (ready.get("reason"), ready.get("message")) if x)
    nodes = sorted(
        {n.split(", node ")[1].split(",")[0] for x in links for n in x.notes if ", node " in n}
    )
    return Verdict(
        "held",
        f"InferenceService Ready={ready.get('status')} ({why}), held back only by the ingress: "
        + HELD_BY.format(ref=held[0].ref)
        + "; in its place the harness checked every other condition of the chain True and "
        f"the revision's pods Running (on {', '.join(nodes) or 'no node named'})",
    )


def wait(
    kubeconfig: str,
    ns: str,
    name: str,
    timeout_s: float,
    echo: Callable[[str], None],
    settle_polls: int = 3,
) -> tuple[Verdict, list[Link]]:
    """Poll until Ready, until the same non-ready verdict holds `settle_polls` times in a row
    (the controllers have nothing left to do), or until the timeout."""
    r = Reader(kubeconfig)
    seen: deque[tuple[Verdict, list[Link]]] = deque(maxlen=settle_polls)

    def settled() -> bool:
        links = observe(r, ns, name)
        v = verdict(links)
        seen.append((v, links))
        if v.status == "ready":
            return True
        same = {(p.status, p.reason) for p, _ in seen}
        if len(seen) == settle_polls and len(same) == 1 and v.status != "pending":
            return True
        echo(f"    chain: {v.status}: {v.reason[:160]}")
        return False

    # Not a failure: the verdict seen last is the answer, the caller reports it.
    with contextlib.suppress(TimeoutError):
        wait_until(settled, timeout_s, 5, f"the chain of {ns}/{name} to settle")
    return seen[-1]


def render(links: list[Link]) -> str:
    return "\n".join(line for link in links for line in link.lines()) + "\n"


def closing(controllers: Mapping[str, Any], observed: Mapping[str, Any]) -> list[str]:
    """The run's closing lines: which controllers ran as processes, the webhooks they served,
    what could not be built, and each link of the chain with its conditions on one line."""
    procs = controllers.get("processes") or {}
    served = len(controllers.get("webhooks_served") or [])
    lines = [f"controllers as processes: {len(procs)}, {served} webhooks served by them:"]
    for name, p in procs.items():
        state = "ran to the end" if p.get("exit_code") is None else f"exited {p['exit_code']}"
        lines.append(f"  {name} for {p['deployment']} ({state})")
    lines += [
        f"  not built: {name}: {why}"
        for name, why in (controllers.get("not_buildable") or {}).items()
    ]
    if observed.get("links"):
        lines.append(f"chain: {observed['verdict']}: {observed['reason']}")
        for link in observed["links"]:
            conds = " ".join(f"{c.get('type')}={c.get('status')}" for c in link["conditions"])
            lines.append(f"  {link['kind']} {link['ref']}: {conds or '(no conditions)'}")
    lines += [f"  canary: {line}" for line in observed.get("canary") or []]
    return lines
