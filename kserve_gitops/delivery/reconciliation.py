"""What Flux's reconciliation did, read from the cluster: each Kustomization's and
HelmRelease's Ready condition over time (Timeline), whether they became Ready in dependsOn
order, what each applied, and which of those custom resources nothing reconciles on kwok.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.delivery.flux import NAMESPACE

READY_KINDS = ("Kustomization", "HelmRelease")
SOURCE_KINDS = ("GitRepository", "HelmRepository", "OCIRepository", "HelmChart")
WATCHED = (
    "kustomizations.kustomize.toolkit.fluxcd.io,helmreleases.helm.toolkit.fluxcd.io,"
    "gitrepositories.source.toolkit.fluxcd.io,helmrepositories.source.toolkit.fluxcd.io,"
    "ocirepositories.source.toolkit.fluxcd.io,helmcharts.source.toolkit.fluxcd.io"
)
# Groups whose objects Kubernetes itself gives a status; any other group's object needs its
# own controller, which kwok does not run.
BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "policy",
    "autoscaling",
    "rbac.authorization.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "networking.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "certificates.k8s.io",
    "apiregistration.k8s.io",
    "node.k8s.io",
}


def ready(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(status of the Ready condition or "Unknown", its message)."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status")), str(cond.get("message") or "").strip()
    return "Unknown", "no Ready condition yet"


def key(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@dataclass
class Timeline:
    """Every change of Ready (status, message) of the watched Flux objects, with the seconds
    since the start, and the first time each became Ready."""

    echo: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    state: dict[str, tuple[str, str]] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    def observe(self, items: Iterable[Mapping[str, Any]]) -> None:
        now = time.monotonic() - self.started
        for obj in items:
            name = key(obj)
            self.objects[name] = dict(obj)
            current = ready(obj)
            if self.state.get(name) == current:
                continue
            self.state[name] = current
            status, message = current
            first = message.splitlines()[0] if message else ""
            line = f"  +{now:6.1f}s {name:<44} Ready={status:<7} {first[:160]}"
            self.lines.append(line)
            self.echo(line)
            if status == "True" and name not in self.ready_at:
                self.ready_at[name] = now

    def pending(self, kinds: Sequence[str] = READY_KINDS) -> list[str]:
        return sorted(
            n
            for n, (status, _) in self.state.items()
            if n.split("/")[0] in kinds and status != "True"
        )

    def order(self, kinds: Sequence[str] = READY_KINDS) -> list[tuple[str, float]]:
        return sorted(
            ((n, t) for n, t in self.ready_at.items() if n.split("/")[0] in kinds),
            key=lambda item: item[1],
        )


def flux_objects(runner: Runner) -> list[dict[str, Any]]:
    out = runner.run(
        ["kubectl", "get", WATCHED, "-n", NAMESPACE, "-o", "json"], timeout=60, quiet=True
    )
    return json.loads(out)["items"]


def order_violations(
    objects: Mapping[str, Mapping[str, Any]], ready_at: Mapping[str, float]
) -> list[str]:
    """Each Kustomization or HelmRelease that became Ready before an object of its dependsOn."""
    found: list[str] = []
    for name, obj in objects.items():
        kind = name.split("/")[0]
        if kind not in READY_KINDS or name not in ready_at:
            continue
        for dep in (obj.get("spec") or {}).get("dependsOn") or []:
            other = f"{kind}/{dep['name']}"
            if other not in ready_at:
                found.append(f"{name} Ready at {ready_at[name]:.1f}s, its dependency {other} never")
            elif ready_at[other] > ready_at[name]:
                found.append(
                    f"{name} Ready at {ready_at[name]:.1f}s, before its dependency {other} "
                    f"({ready_at[other]:.1f}s)"
                )
    return found


def inventory(kustomization: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(namespace, name, group, kind) of every object a Kustomization applied."""
    entries = ((kustomization.get("status") or {}).get("inventory") or {}).get("entries") or []
    split = (str(e["id"]).split("_", 3) for e in entries)
    return [(ns, name, group, kind) for ns, name, group, kind in split]


def layer_namespaces(objects: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Kustomization -> the namespaces of what it applied and of its HelmReleases' releases,
    for the per-layer state of the report."""
    found: dict[str, list[str]] = {NAMESPACE: [NAMESPACE]}
    for name, ks in objects.items():
        if not name.startswith("Kustomization/"):
            continue
        names: list[str] = []
        for ns, obj_name, _group, kind in inventory(ks):
            names.append(obj_name if kind == "Namespace" else ns)
            release = objects.get(f"HelmRelease/{obj_name}") if kind == "HelmRelease" else None
            if release is not None:
                names.append(str((release.get("spec") or {}).get("targetNamespace") or ""))
        found[name.split("/", 1)[1]] = sorted({n for n in names if n and n != NAMESPACE})
    return {k: v for k, v in found.items() if v}


def release_objects(runner: Runner, release: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(namespace, name, group, kind) of every object of a HelmRelease's current release
    (`helm get manifest`, the pinned helm)."""
    history = (release.get("status") or {}).get("history") or []
    if not history:
        return []
    name, storage = history[0]["name"], history[0]["namespace"]
    target = (release.get("spec") or {}).get("targetNamespace") or storage
    out = runner.run(["helm", "get", "manifest", name, "-n", storage], timeout=60, quiet=True)
    found = []
    for doc in yaml.safe_load_all(out):
        if not isinstance(doc, dict) or "kind" not in doc:
            continue
        group = str(doc.get("apiVersion", "")).rpartition("/")[0]
        meta = doc.get("metadata") or {}
        found.append((str(meta.get("namespace") or target), str(meta["name"]), group, doc["kind"]))
    return found


def unreconciled(runner: Runner, refs: Iterable[tuple[str, str, str, str]]) -> list[str]:
    """The custom resources among `refs` that no controller gave a status: kstatus counts an
    object without status conditions as Current, so `wait: true` and helm-controller's wait
    pass on them although nothing on kwok reconciles them."""
    found: list[str] = []
    for ns, name, group, kind in refs:
        if group in BUILTIN_GROUPS or group.endswith("toolkit.fluxcd.io"):
            continue
        argv = ["kubectl", "get", f"{kind}.{group}", name, "-o", "json", "-n", ns or "default"]
        try:
            obj = json.loads(runner.run(argv, timeout=60, quiet=True))
        except (CommandError, ValueError):
            continue
        if not (obj.get("status") or {}).get("conditions"):
            scoped = (obj.get("metadata") or {}).get("namespace")
            found.append(f"{kind} {scoped + '/' if scoped else ''}{name}")
    return found


def wait_ready(
    runner: Runner,
    timeline: Timeline,
    expected: Sequence[str],
    timeout_s: float,
    tick: Callable[[], None] = lambda: None,
    poll_s: float = 2.0,
) -> list[str]:
    """Poll until every object of `expected` (and every HelmRelease that appears) is Ready;
    [] on success, else what is not Ready with its message."""
    deadline = time.monotonic() + timeout_s
    while True:
        tick()
        timeline.observe(flux_objects(runner))
        names = set(expected) | {n for n in timeline.state if n.startswith("HelmRelease/")}
        waiting = sorted(n for n in names if timeline.state.get(n, ("", ""))[0] != "True")
        if not waiting:
            return []
        if time.monotonic() > deadline:
            absent = ("absent", "never created")
            return [f"{n}: Ready={' '.join(timeline.state.get(n, absent))}" for n in waiting]
        time.sleep(poll_s)
