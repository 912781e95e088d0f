"""What a run on a real API server must show, read from the cluster's objects (kubectl -o json):
workloads Available, every pod admitted (Pod Security, ServiceAccount) and scheduled, claims
bound, references present. Each finding names the object, the field and the server's message."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Read in one `kubectl get` (the order is the report's).
KINDS = (
    "customresourcedefinitions",
    "deployments",
    "statefulsets",
    "daemonsets",
    "replicasets",
    "jobs",
    "pods",
    "persistentvolumeclaims",
    "serviceaccounts",
    "configmaps",
    "secrets",
)

Obj = Mapping[str, Any]

# Objects a controller that does not run on kwok creates at runtime: a pod referencing one is
# reported as not checked (with who would create it), never as passing or failing.
RUNTIME_PUBLISHED: dict[tuple[str, str], str] = {
    ("ConfigMap", "istio-ca-root-cert"): "istiod publishes it into every namespace at runtime",
}


@dataclass(frozen=True)
class Finding:
    ref: str  # Kind/namespace/name
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.field}: {self.message}"


def ref(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')}/{ns}{meta.get('name')}"


def _conditions(obj: Obj) -> dict[str, Mapping[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def _by_kind(objects: Iterable[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for obj in objects:
        out.setdefault(str(obj.get("kind")), []).append(obj)
    return out


def crds_established(crds: Iterable[Obj]) -> list[Finding]:
    found = []
    for crd in crds:
        cond = _conditions(crd).get("Established") or {}
        if cond.get("status") != "True":
            found.append(
                Finding(
                    ref(crd),
                    "status.conditions[Established]",
                    cond.get("message") or "not Established",
                )
            )
    return found


def failed_creates(events: Iterable[Obj]) -> dict[str, str]:
    """Owner ref -> the server's message of its latest FailedCreate (a pod it could not
    create: Pod Security, a missing ServiceAccount, ...)."""
    latest: dict[str, tuple[str, str]] = {}
    for ev in events:
        if ev.get("reason") != "FailedCreate":
            continue
        inv = ev.get("involvedObject") or {}
        owner = {
            "kind": inv.get("kind"),
            "metadata": {"namespace": inv.get("namespace"), "name": inv.get("name")},
        }
        when = str(ev.get("lastTimestamp") or ev.get("eventTime") or "")
        key = ref(owner)
        if key not in latest or when >= latest[key][0]:
            latest[key] = (when, str(ev.get("message")))
    return {key: msg for key, (_, msg) in latest.items()}


def workloads_available(
    objects: Mapping[str, list[Obj]], failed: Mapping[str, str] | None = None
) -> list[Finding]:
    """Deployments Available, StatefulSets and DaemonSets ready; the reason is the server's
    refusal of their pods where there is one."""
    failed = failed or {}
    found = []
    for dep in objects.get("Deployment", []):
        want = (dep.get("spec") or {}).get("replicas", 1)
        status = dep.get("status") or {}
        avail = _conditions(dep).get("Available") or {}
        if want and (avail.get("status") != "True" or status.get("availableReplicas", 0) < want):
            failure = _conditions(dep).get("ReplicaFailure") or {}
            why = failure.get("message") or avail.get("message") or "not Available"
            have = status.get("availableReplicas", 0)
            found.append(Finding(ref(dep), "status.availableReplicas", f"{have}/{want}: {why}"))
    for sts in objects.get("StatefulSet", []):
        want = (sts.get("spec") or {}).get("replicas", 1)
        ready = (sts.get("status") or {}).get("readyReplicas", 0)
        if ready < want:
            why = failed.get(ref(sts), "pods not ready")
            found.append(Finding(ref(sts), "status.readyReplicas", f"{ready}/{want}: {why}"))
    for ds in objects.get("DaemonSet", []):
        status = ds.get("status") or {}
        want, ready = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
        if ready < want or want == 0:
            why = failed.get(ref(ds), "pods not ready")
            found.append(Finding(ref(ds), "status.numberReady", f"{ready}/{want}: {why}"))
    for rs in objects.get("ReplicaSet", []):
        failure = _conditions(rs).get("ReplicaFailure") or {}
        if failure.get("status") == "True":
            # The server's refusal of the pod (Pod Security, a missing ServiceAccount, ...).
            found.append(
                Finding(ref(rs), "pod template (ReplicaFailure)", str(failure.get("message")))
            )
    for job in objects.get("Job", []):
        if _conditions(job).get("Failed", {}).get("status") == "True" or ref(job) in failed:
            why = failed.get(ref(job)) or _conditions(job)["Failed"].get("message")
            found.append(Finding(ref(job), "status", f"{why}"))
    return found


def pods_scheduled(pods: Iterable[Obj]) -> list[Finding]:
    found = []
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        scheduled = _conditions(pod).get("PodScheduled") or {}
        if scheduled.get("status") != "True":
            found.append(
                Finding(
                    ref(pod),
                    "status.conditions[PodScheduled]",
                    scheduled.get("message") or "not scheduled",
                )
            )
        elif phase not in ("Running", "Succeeded"):
            found.append(Finding(ref(pod), "status.phase", f"{phase}"))
    return found


def _mounted(source: Obj, secret_name: str, where: str) -> list[tuple[str, str, str, bool]]:
    """The ConfigMap and Secret a volume or a projected volume's source mounts (a volume names
    its Secret in `secretName`, a projected source in `name`)."""
    refs: list[tuple[str, str, str, bool]] = []
    if "configMap" in source:
        cm = source["configMap"]
        refs.append(("ConfigMap", cm.get("name"), where, bool(cm.get("optional"))))
    if "secret" in source:
        sec = source["secret"]
        refs.append(("Secret", sec.get(secret_name), where, bool(sec.get("optional"))))
    return refs


def pod_references(pod: Obj) -> list[tuple[str, str, str, bool]]:
    """(kind, name, field, optional) of every ServiceAccount/ConfigMap/Secret/claim a pod
    needs to start."""
    spec = pod.get("spec") or {}
    refs: list[tuple[str, str, str, bool]] = []
    sa = spec.get("serviceAccountName")
    if sa:
        refs.append(("ServiceAccount", sa, "spec.serviceAccountName", False))
    for i, secret in enumerate(spec.get("imagePullSecrets") or []):
        if secret.get("name"):
            # The kubelet only warns about a missing pull secret; the pod may still pull.
            refs.append(("Secret", secret["name"], f"spec.imagePullSecrets[{i}]", True))
    for vol in spec.get("volumes") or []:
        where = f"spec.volumes[{vol.get('name')}]"
        refs += _mounted(vol, "secretName", where)
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"].get("claimName")
            refs.append(("PersistentVolumeClaim", claim, where, False))
        for src in (vol.get("projected") or {}).get("sources") or []:
            refs += _mounted(src, "name", where)
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    for c in containers:
        cname = c.get("name")
        for src in c.get("envFrom") or []:
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in src:
                    r = src[key]
                    refs.append(
                        (
                            kind,
                            r.get("name"),
                            f"containers[{cname}].envFrom",
                            bool(r.get("optional")),
                        )
                    )
        for env in c.get("env") or []:
            value_from = env.get("valueFrom") or {}
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in value_from:
                    r = value_from[key]
                    refs.append(
                        (
                            kind,
                            r.get("name"),
                            f"containers[{cname}].env[{env.get('name')}]",
                            bool(r.get("optional")),
                        )
                    )
    return refs


def references_present(
    objects: Mapping[str, list[Obj]], unchecked: list[Finding] | None = None
) -> list[Finding]:
    """Missing references; those only a controller that does not run here would create go
    to `unchecked` instead."""
    present = {
        (kind, (o.get("metadata") or {}).get("namespace"), (o.get("metadata") or {}).get("name"))
        for kind in ("ServiceAccount", "ConfigMap", "Secret", "PersistentVolumeClaim")
        for o in objects.get(kind, [])
    }
    bound = {
        ((o.get("metadata") or {}).get("namespace"), (o.get("metadata") or {}).get("name"))
        for o in objects.get("PersistentVolumeClaim", [])
        if (o.get("status") or {}).get("phase") == "Bound"
    }
    found = []
    for pod in objects.get("Pod", []):
        ns = (pod.get("metadata") or {}).get("namespace")
        for kind, name, where, optional in pod_references(pod):
            if optional:
                continue
            if (kind, ns, name) not in present:
                why = RUNTIME_PUBLISHED.get((kind, name))
                if why and unchecked is not None:
                    unchecked.append(Finding(ref(pod), where, f"{kind} {ns}/{name}: {why}"))
                    continue
                found.append(Finding(ref(pod), where, f"{kind} {ns}/{name} does not exist"))
            elif kind == "PersistentVolumeClaim" and (ns, name) not in bound:
                found.append(Finding(ref(pod), where, f"claim {ns}/{name} is not Bound"))
    return found


def check(
    objects: Iterable[Obj], events: Iterable[Obj], unchecked: list[Finding] | None = None
) -> list[Finding]:
    """Every finding over a cluster's objects (from KINDS) and its events; what could not be
    checked here goes to `unchecked`."""
    by_kind = _by_kind(objects)
    return [
        *crds_established(by_kind.get("CustomResourceDefinition", [])),
        *workloads_available(by_kind, failed_creates(events)),
        *pods_scheduled(by_kind.get("Pod", [])),
        *references_present(by_kind, unchecked),
    ]


def counts(objects: Iterable[Obj]) -> Counter[str]:
    return Counter(str(o.get("kind")) for o in objects)
