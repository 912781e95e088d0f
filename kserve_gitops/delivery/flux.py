"""Flux's own controllers (source-controller, kustomize-controller, helm-controller, built from
their Go modules at the versions of versions.yaml `flux:`) reconciling clusters/<env> on a kwok
cluster, with every source served locally (kserve_gitops.delivery.sources).

The manifests stay as users get them: a test-only overlay generated under
.cache/flux/<env>/overlay points the GitRepository at the local Git server and, through Flux's
own `spec.patches` on the Kustomization that applies them, the HelmRepository and OCIRepository
objects at the local chart servers. Nothing else is changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from kserve_gitops.base.tools import CommandError, Runner, stop_process
from kserve_gitops.delivery import sources
from kserve_gitops.localcluster import binaries, controlplane
from kserve_gitops.localcluster.controlplane import PORTS, port_in_use
from kserve_gitops.repo import Repo, render
from kserve_gitops.repo import flux as repo_flux

NAMESPACE = "flux-system"
GIT_REPO = "kserve-gitops"
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
# Flux's port range: 24000-24499, below Linux's ephemeral range (32768-60999) where any
# outgoing connection (the API server's to etcd, say) may take a server port between the check
# and the bind. Clusters at 24000 + 10 * slot, local servers and controllers at 24100 + 20 * slot;
# slots 0-2 are the environments, 3 the behaviour tests.
CLUSTER_PORTS = 24000
SERVER_PORTS = 24100


class FluxError(Exception):
    """A Flux component that could not be prepared, started or that never got Ready."""


def slot(repo: Repo, name: str) -> int:
    """flux-<env> clusters take their environment's slot, any other name the one after."""
    names, env = repo.environment_names, name.removeprefix("flux-")
    return names.index(env) if env in names else len(names)


@dataclass(frozen=True)
class Ports:
    """The local servers' and controllers' ports: the first free ones of the cluster's window
    of 20. A port another program holds (or a test's server left) is skipped rather than
    fought over."""

    git: int
    charts: int
    registry: int
    storage: int
    health: dict[str, int]

    @classmethod
    def allocate(cls, repo: Repo, name: str) -> Ports:
        first = SERVER_PORTS + 20 * slot(repo, name)
        free = [p for p in range(first, first + 20) if not port_in_use(p)]
        need = 4 + len(binaries.FLUX_CONTROLLERS)
        if len(free) < need:
            raise FluxError(f"ports {first}-{first + 19}: {len(free)} free, {need} needed")
        return cls(*free[:4], dict(zip(binaries.FLUX_CONTROLLERS, free[4:need], strict=True)))


def cluster_port_base(repo: Repo, name: str) -> int:
    """ClusterConfig.port_base that puts cluster `name`'s control plane at the first start
    from CLUSTER_PORTS + 10 * slot on (wrapping within the 100 cluster ports) whose ports are
    all free: a port a client connection just left stays taken for a minute (TIME_WAIT). The
    control plane adds 10 * its own slot of the name to the base."""
    first, span = CLUSTER_PORTS + 10 * slot(repo, name), 100 - max(PORTS.values())
    for step in range(span):
        start = CLUSTER_PORTS + (first - CLUSTER_PORTS + step) % span
        if not any(port_in_use(start + offset) for offset in PORTS.values()):
            return start - 10 * controlplane.slot(repo, name)  # the control plane adds its slot
    raise FluxError(
        f"cluster {name}: no free ports for a control plane in {CLUSTER_PORTS}-{CLUSTER_PORTS + 99}"
    )


def crd_files(repo: Repo) -> list[Path]:
    """Every CRD of the pinned controllers, from their Go modules (config/crd/bases): the set
    `flux install` applies for them, Bucket and ExternalArtifact included, which the
    controllers watch."""
    found: list[Path] = []
    for binary in binaries.flux_pinned(repo):
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{binary.package}@{binary.version}"],
            cwd=binaries.outside_modules(),
            capture_output=True,
            text=True,
            check=False,
        )
        info = json.loads(proc.stdout or "{}")
        if proc.returncode != 0 or "Dir" not in info:
            raise FluxError(f"{binary.package}@{binary.version}: {info.get('Error', proc.stderr)}")
        found += sorted((Path(info["Dir"]) / "config" / "crd" / "bases").glob("*.yaml"))
    return found


@dataclass
class Controllers:
    """The three controllers as processes with the admin kubeconfig, leader election off,
    health on loopback; source-controller's artifact server on loopback too,
    advertised at that address so the other two fetch from it."""

    bins: Mapping[str, Path]
    kubeconfig: Path
    ports: Ports
    workdir: Path
    requeue_dependency: str = "5s"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def argv(self, name: str) -> list[str]:
        common = [
            "--metrics-addr=0",  # no metrics server: nothing scrapes it here
            f"--health-addr=127.0.0.1:{self.ports.health[name]}",
            "--enable-leader-election=false",
            "--watch-all-namespaces=true",
            "--log-encoding=console",
            # dependsOn is re-checked at this period (30s by default): shorter, so that the
            # chain's order shows in seconds rather than half minutes.
            f"--requeue-dependency={self.requeue_dependency}",
        ]
        if name == "source-controller":
            storage = f"127.0.0.1:{self.ports.storage}"
            common += [
                f"--storage-path={self.workdir / 'artifacts'}",
                f"--storage-addr={storage}",
                f"--storage-adv-addr={storage}",
            ]
        return [str(self.bins[name]), *common]

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def start(self, timeout_s: float = 60) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "artifacts").mkdir(exist_ok=True)  # source-controller requires it
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "RUNTIME_NAMESPACE": NAMESPACE,
            "HOME": str(self.workdir),
        }
        for name in binaries.FLUX_CONTROLLERS:
            with self.log(name).open("ab") as log:
                self.procs[name] = subprocess.Popen(
                    self.argv(name),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.workdir,
                )
        for name in binaries.FLUX_CONTROLLERS:
            self._wait_ready(name, timeout_s)

    def _wait_ready(self, name: str, timeout_s: float) -> None:
        url = f"http://127.0.0.1:{self.ports.health[name]}/readyz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise FluxError(f"{name}: not ready at {url} after {timeout_s:.0f}s: {self.tail(name)}")

    def tail(self, name: str, lines: int = 12) -> str:
        text = self.log(name).read_text(errors="replace") if self.log(name).is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise FluxError(f"{name} exited {proc.returncode}:\n{self.tail(name)}")

    def stop(self) -> None:
        for proc in self.procs.values():  # all at once, then each waited for
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            stop_process(proc, 15)
        self.procs.clear()


# -- the local sources and the overlay that points Flux at them --------------------------------


@dataclass(frozen=True)
class Source:
    """A Flux source object of the manifests: which Kustomization applies it ("" for the entry
    point itself), its kind, name and upstream URL."""

    layer: str
    kind: str
    name: str
    url: str


def entry_objects(repo: Repo, env: str) -> list[dict[str, Any]]:
    """What clusters/<env> (the Flux entry point) builds to."""
    return render.kustomize_build(repo, repo_flux.entry_point(repo, env))


def chart_sources(repo: Repo, env: str) -> list[Source]:
    """The HelmRepository and OCIRepository objects each Kustomization of clusters/<env>
    applies (and any in the entry point itself)."""
    found: list[Source] = []
    top = entry_objects(repo, env)
    layers = [("", top)] + [
        (
            k["metadata"]["name"],
            render.kustomize_build(repo, repo.root / str(k["spec"]["path"]).removeprefix("./")),
        )
        for k in top
        if k.get("kind") == "Kustomization"
    ]
    for layer, objs in layers:
        found += [
            Source(layer, o["kind"], o["metadata"]["name"], str(o["spec"]["url"]))
            for o in objs
            if o.get("kind") in ("HelmRepository", "OCIRepository")
        ]
    return found


def local_url(source: Source, charts_url: str, registry: str) -> str:
    """Where the local servers serve what `source` names upstream."""
    if source.kind == "OCIRepository":
        return f"oci://{registry}{urlparse(source.url).path}"
    return f"{charts_url}/{source.name}"


def _json_patch(ops: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(ops, sort_keys=False)


# kwok runs no KServe controller in the Flux e2e (its chart's pods are kwok's): nothing sets an
# InferenceService's status, so the HelmReleases' health expressions (Ready) could never hold.
# Every Kustomization of the overlay drops them from the HelmReleases it applies (a strategic
# merge patch: a no-op where none is declared), and helm-controller falls back to kstatus.
NO_HEALTH_CHECK_EXPRS = {
    "target": {"group": "helm.toolkit.fluxcd.io", "kind": "HelmRelease"},
    "patch": yaml.safe_dump(
        {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "any"},
            "spec": {"healthCheckExprs": None},
        },
        sort_keys=False,
    ),
}


def overlay(
    repo: Repo,
    env: str,
    dest: Path,
    git_url: str,
    chart_srcs: Sequence[Source],
    charts_url: str,
    registry: str,
    interval: str | None = None,
) -> Path:
    """Write dest/kustomization.yaml: clusters/<env> with the GitRepository pointed at
    `git_url` and, as Flux patches on the Kustomization that applies each chart source, the
    source pointed at the local server (OCI over plain HTTP: `insecure: true`); on every
    Kustomization, the HelmReleases' health expressions dropped (NO_HEALTH_CHECK_EXPRS). `interval`
    (the behaviour tests) shortens every Kustomization's and the GitRepository's interval."""
    top = entry_objects(repo, env)
    repos = [o for o in top if o.get("kind") == "GitRepository"]
    if len(repos) != 1:
        raise FluxError(f"clusters/{env}: expected one GitRepository, found {len(repos)}")
    git_ops: list[dict[str, Any]] = [{"op": "replace", "path": "/spec/url", "value": git_url}]
    if interval:
        git_ops.append({"op": "replace", "path": "/spec/interval", "value": interval})
    patches: list[dict[str, Any]] = [
        {
            "target": {"kind": "GitRepository", "name": repos[0]["metadata"]["name"]},
            "patch": _json_patch(git_ops),
        }
    ]
    by_layer: dict[str, list[Source]] = {}
    for src in chart_srcs:
        by_layer.setdefault(src.layer, []).append(src)
    if "" in by_layer:
        raise FluxError(f"clusters/{env}: chart sources in the entry point are not supported")
    for ks in (o for o in top if o.get("kind") == "Kustomization"):
        name = ks["metadata"]["name"]
        ops: list[dict[str, Any]] = []
        flux_patches = [
            {
                "target": {"kind": s.kind, "name": s.name},
                "patch": _json_patch(
                    [
                        {
                            "op": "replace",
                            "path": "/spec/url",
                            "value": local_url(s, charts_url, registry),
                        }
                    ]
                    + (
                        [{"op": "add", "path": "/spec/insecure", "value": True}]
                        if s.kind == "OCIRepository"
                        else []
                    )
                ),
            }
            for s in by_layer.get(name, [])
        ]
        flux_patches.append(NO_HEALTH_CHECK_EXPRS)
        if flux_patches:
            existing = (ks.get("spec") or {}).get("patches") or []
            ops.append({"op": "add", "path": "/spec/patches", "value": [*existing, *flux_patches]})
        if interval:
            ops.append({"op": "replace", "path": "/spec/interval", "value": interval})
        if ops:
            patches.append(
                {"target": {"kind": "Kustomization", "name": name}, "patch": _json_patch(ops)}
            )
    dest.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(repo.root / "clusters" / env, dest)],
        "patches": patches,
    }
    header = (
        f"# Generated by kserve_gitops.delivery.flux for the Flux e2e of {env}: clusters/{env}\n"
        "# with its sources pointed at the local servers. Test only; never committed.\n"
    )
    (dest / "kustomization.yaml").write_text(
        header + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return dest


# -- watching what Flux does --------------------------------------------------------------------


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


def serve_charts(
    repo: Repo,
    env: str,
    chart_srcs: Sequence[Source],
    helm: Path,
    registry: sources.Registry,
    dest: Path,
    charts_url: str,
) -> list[str]:
    """Package the cached charts each source names into the Helm repository folder (one
    sub-folder per HelmRepository) or push them to the registry; what was served."""
    from kserve_gitops.upstream import charts as upstream_charts

    served: list[str] = []
    refs = upstream_charts.required(repo, [env])
    http: list[tuple[str, Path]] = []
    for src in chart_srcs:
        mine = [r for r in refs if r.repository == src.url]
        if not mine:
            raise FluxError(f"{src.kind}/{src.name} ({src.url}): no chart of {env} comes from it")
        for ref in mine:
            folder = upstream_charts.chart_dir(repo, ref.chart, ref.version, online=False)
            if src.kind == "OCIRepository":
                parent = urlparse(src.url).path.rsplit("/", 1)[0].lstrip("/")
                pushed = registry.push(helm, folder, parent, dest / "oci")
                served.append(f"{ref} -> {pushed}:{ref.version}")
            else:
                http.append((src.name, folder))
                served.append(f"{ref} -> {charts_url}/{src.name}")
    sources.helm_repositories(helm, http, dest / "helm", charts_url)
    return served
