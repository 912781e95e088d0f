"""The broken-release scenario on the real node: Flux's own controllers take over the models
layer the e2e installed with helm; a commit sets a model version whose pod can never become
Ready; the HelmRelease's upgrade fails on its declared health check and its declared remediation
rolls it back, while open-loop load through the revision the Knative Service routes to counts
what a client sees. The failure is reported with Helm's reasons (the HelmRelease's conditions)
and the kubelet's (the broken pods' container states).

Test overlay, printed by the run: the models Kustomization without its dependsOn (the platform
layers were applied by the e2e, not by Flux), and the InferenceService's health expression
reading PredictorConfigurationReady where the environment reads Ready: Ready needs the ingress
(IngressReady), which cannot be built here; PredictorConfigurationReady is the part of Ready a
model version decides (its revision Ready), False as Ready is when the version is broken."""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.base.wait import wait_until
from kserve_gitops.controllers.canary import split_of
from kserve_gitops.delivery import flux, overlay, reconciliation, sources
from kserve_gitops.e2e import reliability, rollout_load, traffic
from kserve_gitops.localcluster import binaries
from kserve_gitops.repo import Repo, render
from kserve_gitops.repo import flux as repo_flux
from kserve_gitops.repo.slo import parse_duration

SCENARIO = "broken-release"
# A model version no target copies to the claim: the model server starts without a model, which
# its readiness check (the chart's model.readinessCheck) never lets become Ready.
MISSING_VERSION = "never-copied"
HELM_API = "helm.toolkit.fluxcd.io/v2"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"  # what `flux reconcile` sets
CONDITIONS = ("Ready", "Released", "Remediated", "Stalled")
STARTING = ("ContainerCreating", "PodInitializing")  # a container's waiting reasons on the way up
POLL_S = 2.0
DEFAULT_TIMEOUT = "5m"  # helm-controller's HelmRelease timeout when none is declared
NODE_CURRENT = "PredictorConfigurationReady"
# Flux's kinds by the resource names kubectl takes, in the order they are removed.
RESOURCES = {
    "HelmRelease": "helmreleases.helm.toolkit.fluxcd.io",
    "HelmChart": "helmcharts.source.toolkit.fluxcd.io",
    "Kustomization": "kustomizations.kustomize.toolkit.fluxcd.io",
    "GitRepository": "gitrepositories.source.toolkit.fluxcd.io",
}


class BrokenReleaseError(Exception):
    """Flux could not take over the models layer, or the release never got Ready."""


def node_health_checks(exprs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The declared health expressions with the InferenceService's `current` reading
    PredictorConfigurationReady in place of Ready (no ingress here); `failed` is unchanged."""
    out = []
    for e in exprs:
        if e.get("kind") == "InferenceService":
            e = {**e, "current": e["current"].replace("'Ready'", f"'{NODE_CURRENT}'")}
        out.append(e)
    return out


def break_storage_uri(text: str, where: str) -> tuple[str, str, str]:
    """The values file with its one storageUri pointing at MISSING_VERSION on the same claim:
    (new text, old URI, new URI). Comments and layout stay as they are."""
    found = re.findall(r"^(\s*storageUri:\s*)(pvc://[^/\s]+)/(\S+)\s*$", text, re.MULTILINE)
    if len(found) != 1:
        raise BrokenReleaseError(f"{where}: expected one pvc:// storageUri, found {len(found)}")
    indent, claim, path = found[0]
    old, new = f"{claim}/{path}", f"{claim}/{MISSING_VERSION}"
    return text.replace(f"{indent}{old}", f"{indent}{new}", 1), old, new


@dataclass
class FluxOnNode:
    """Flux's three controllers as processes against the real-node cluster, with the local Git
    server serving a snapshot of the work tree; `release` is taken over with its layer."""

    repo: Repo
    env: str
    release: str
    runner: Runner
    kubeconfig: Path
    workdir: Path
    echo: Any
    controllers: flux.Controllers | None = None
    server: sources.HTTPServer | None = None
    layer: repo_flux.Layer | None = None
    applied: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) in flux-system

    @property
    def work(self) -> Path:
        return self.workdir / "git" / flux.GIT_REPO

    def start(self) -> None:
        repo = self.repo
        bins = binaries.ensure(binaries.flux_pinned(repo), self.echo)
        shutil.rmtree(self.workdir, ignore_errors=True)
        ports = flux.Ports.allocate(repo, f"node-{self.env}")
        commit = sources.snapshot(repo, self.work)
        self.server = sources.git_server(self.work.parent, ports.git)
        self.server.start()
        self.controllers = flux.install(
            self.runner, repo, bins, self.kubeconfig, ports, self.workdir / "flux"
        )
        self.echo(
            f"    Flux {', '.join(binaries.FLUX_CONTROLLERS)} running; Git at 127.0.0.1:"
            f"{ports.git}, main at {commit[:12]} (snapshot of the work tree)"
        )

    def take_over(self) -> None:
        """Apply the GitRepository and the Kustomization of the release's layer (test overlay:
        no dependsOn, the node's health expression as a Flux patch)."""
        top = overlay.entry_objects(self.repo, self.env)
        layer = next(
            (
                lay
                for lay in repo_flux.layers(self.repo, self.env)
                if any(r.name == self.release for r in lay.releases)
            ),
            None,
        )
        if layer is None:
            raise BrokenReleaseError(f"clusters/{self.env}: no layer applies {self.release}")
        self.layer = layer
        git = next(o for o in top if o.get("kind") == "GitRepository")
        ks = next(
            o
            for o in top
            if o.get("kind") == "Kustomization" and o["metadata"]["name"] == layer.name
        )
        port = self.server.port if self.server else 0
        git = {
            **git,
            "spec": {**git["spec"], "url": f"http://127.0.0.1:{port}/{flux.GIT_REPO}.git"},
        }
        hr = next(
            o
            for o in render.kustomize_build(self.repo, self.repo.root / layer.path)
            if o.get("kind") == "HelmRelease" and o["metadata"]["name"] == self.release
        )
        exprs = (hr.get("spec") or {}).get("healthCheckExprs")
        if not exprs:
            raise BrokenReleaseError(
                f"{layer.path}: HelmRelease {self.release} declares no spec.healthCheckExprs: "
                "helm-controller would call any InferenceService healthy (kstatus)"
            )
        patch = {
            "apiVersion": HELM_API,
            "kind": "HelmRelease",
            "metadata": {"name": self.release},
            "spec": {"healthCheckExprs": node_health_checks(exprs)},
        }
        spec = {k: v for k, v in ks["spec"].items() if k != "dependsOn"}
        spec["patches"] = [
            *(spec.get("patches") or []),
            {
                "target": {"kind": "HelmRelease", "name": self.release},
                "patch": yaml.safe_dump(patch, sort_keys=False),
            },
        ]
        objs = [git, {**ks, "spec": spec}]
        self.echo(
            f"    test overlay: Kustomization/{layer.name} without dependsOn (the e2e applied the "
            f"platform), HelmRelease/{self.release}'s InferenceService health reads "
            f"{NODE_CURRENT} for Ready (no ingress here)"
        )
        self.runner.run(["kubectl", "apply", "-f", "-"], stdin=yaml.safe_dump_all(objs))
        self.applied = [(o["kind"], o["metadata"]["name"]) for o in objs]

    def publish(self, rel: str, text: str, message: str) -> str:
        (self.work / rel).write_text(text)
        commit = sources.publish(self.work, message)
        self.reconcile()
        return commit

    def reconcile(self) -> None:
        """What `flux reconcile` does: ask each object to reconcile now."""
        stamp = datetime.now(UTC).isoformat()
        for kind, name in [*self.applied, ("HelmRelease", self.release)]:
            argv = ["kubectl", "annotate", "--overwrite", "-n", flux.NAMESPACE]
            argv += [f"{RESOURCES[kind]}/{name}", f"{REQUESTED_AT}={stamp}"]
            self.runner.run(argv, timeout=60, quiet=True)

    def stop(self) -> None:
        """Stop the controllers, then remove Flux's objects without uninstalling the release
        (their finalizers dropped: no controller is left to act on the deletion)."""
        if self.controllers is not None:
            self.controllers.stop()
        if self.server is not None:
            self.server.stop()
        for resource in RESOURCES.values():
            argv = ["kubectl", "get", resource, "-n", flux.NAMESPACE, "-o", "name"]
            for name in self.runner.run(argv, timeout=60, quiet=True).split():
                where = [name, "-n", flux.NAMESPACE]
                unfinalized = ["--type=merge", "-p", '{"metadata":{"finalizers":null}}']
                self.runner.run(["kubectl", "patch", *where, *unfinalized], timeout=60, quiet=True)
        # The values ConfigMaps the Kustomization generated go with the namespace; the release's
        # storage is in its own namespace (storageNamespace) and stays.
        argv = ["kubectl", "delete", "namespace", flux.NAMESPACE, "--wait=false"]
        self.runner.run(argv, timeout=60, quiet=True)


@dataclass
class Watch:
    """What the scenario observes while Flux acts, once per change: the HelmRelease's
    conditions (Helm's reasons) and the model's pods' container states (the kubelet's)."""

    scenario: reliability.Scenarios
    load: traffic.OpenLoop
    router: rollout_load.Router
    events: list[tuple[float, str]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)
    kubelet: list[str] = field(default_factory=list)  # the broken pods' reasons, in order
    latest_created: str = ""  # the Knative Service's newest revision, as last seen
    heard: set[tuple[str, str]] = field(default_factory=set)  # (object, what the kubelet said)
    since: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def event(self, what: str) -> None:
        if self.load.started:  # before, the poll only finds the route the load starts on
            self.scenario.event(self.load, self.events, self.states, what)

    def poll(self, release: str) -> dict[str, Any] | None:
        """One look at the routes, the pods and the HelmRelease (None until it exists)."""
        s = self.scenario
        ksvc = s.paths.get("ksvc", f"{s.model}-predictor", "-n", s.namespace)
        split = split_of(ksvc)
        self.latest_created = split.latest_created
        if split.traffic and split.traffic != self.router.split:
            self.router.follow(split)
            self.event(f"Knative routes {', '.join(f'{r} {p}%' for r, p in split.traffic)}")
        select = f"serving.kserve.io/inferenceservice={s.model}"
        for pod in s.paths.get("pods", "-n", s.namespace, "-l", select).get("items") or []:
            for c in (pod.get("status") or {}).get("containerStatuses") or []:
                said = container_reason(c) if c["name"] == reliability.MODEL_CONTAINER else ""
                self.kubelet_said(f"pod {pod['metadata']['name']} {c['name']}", said)
        for ev in s.paths.get("events", "-n", s.namespace).get("items") or []:
            source = ev.get("reportingComponent") or (ev.get("source") or {}).get("component")
            when = ev.get("lastTimestamp") or ev.get("eventTime") or ""
            # Only this scenario's: the namespace keeps the earlier scenarios' events for an hour.
            if source == "kubelet" and ev.get("type") == "Warning" and when >= self.since:
                obj = ev.get("involvedObject") or {}
                what = f"{obj.get('kind', '').lower()} {obj.get('name')} {obj.get('fieldPath', '')}"
                self.kubelet_said(what.strip(), f"{ev.get('reason')}: {ev.get('message')}")
        try:
            hr = s.paths.get(RESOURCES["HelmRelease"], release, "-n", flux.NAMESPACE)
        except CommandError:  # kustomize-controller has not applied it yet
            return None
        for cond in (hr.get("status") or {}).get("conditions") or []:
            if cond.get("type") not in CONDITIONS:
                continue
            said = f"{cond['status']} {cond.get('reason', '')}: {cond.get('message', '')}".strip()
            if self.seen.get(cond["type"]) != said:
                self.seen[cond["type"]] = said
                self.event(f"HelmRelease {cond['type']}={said}")
        return hr

    def kubelet_said(self, what: str, said: str) -> None:
        """Record what the kubelet says about `what`, each distinct message once (a probe's
        failure alternates between a few)."""
        if said and (what, said) not in self.heard:
            self.heard.add((what, said))
            self.kubelet.append(f"{what}: {said}")
            self.event(f"kubelet: {what}: {said}")

    def until(self, release: str, done: Any, within_s: float) -> dict[str, Any] | None:
        """Poll until done(HelmRelease) or `within_s` from now; the last HelmRelease seen (the
        scenario's budget judges a wait that ran out)."""
        last: list[dict[str, Any] | None] = [None]

        def check() -> bool:
            last[0] = self.poll(release)
            return last[0] is not None and bool(done(last[0]))

        with contextlib.suppress(TimeoutError):
            wait_until(check, within_s, POLL_S, f"HelmRelease {release}")
        return last[0]


def container_reason(status: dict[str, Any]) -> str:
    """The kubelet's reason a container is not running, or "" when it runs or is only being
    created or stopped normally (exit 0)."""
    state, last = status.get("state") or {}, status.get("lastState") or {}
    waiting, ended = state.get("waiting"), last.get("terminated") or state.get("terminated")
    if waiting and waiting.get("reason") in STARTING:
        waiting = None
    if ended and ended.get("exitCode") == 0:
        ended = None
    if not waiting and not ended:
        return ""
    parts = []
    if waiting:
        parts.append(f"{waiting.get('reason', 'Waiting')}")
    if ended:
        message = (ended.get("message") or "").strip().splitlines()
        parts.append(
            f"last exit {ended.get('exitCode')} ({ended.get('reason', '')})"
            + (f": {message[-1][:160]}" if message else "")
        )
    return "; ".join(parts)


def history(hr: dict[str, Any]) -> list[str]:
    """The HelmRelease's release history, newest first: version, status, chart, digest."""
    return [
        f"v{h.get('version')} {h.get('status')} {h.get('chartName')}@{h.get('chartVersion')}"
        for h in (hr.get("status") or {}).get("history") or []
    ]


def remediation(hr: dict[str, Any]) -> tuple[int, str]:
    """(retries, strategy) of the HelmRelease's upgrade remediation."""
    rem = ((hr.get("spec") or {}).get("upgrade") or {}).get("remediation") or {}
    return int(rem.get("retries") or 0), str(rem.get("strategy") or "rollback")


def stalled(hr: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Stalled" and c.get("status") == "True"
        for c in (hr.get("status") or {}).get("conditions") or []
    )


def run(s: reliability.Scenarios, fl: FluxOnNode) -> reliability.Result:
    """Flux takes over the release, then a commit breaks its model version under load."""
    d = reliability.Declared.read(s.paths, s.model, s.namespace)
    try:
        fl.start()
        fl.take_over()
        return _break(s, fl, d)
    finally:
        fl.stop()
        s.echo("    Flux stopped and its objects removed; the release stays installed")


def _break(s: reliability.Scenarios, fl: FluxOnNode, d: reliability.Declared) -> reliability.Result:
    router = rollout_load.Router(s.paths, s.namespace)
    load = traffic.OpenLoop(
        "", s.model, s.rows, reliability.RATE, timeout_s=d.timeout_s, route=router
    )
    watch = Watch(s, load, router)
    watch.poll(s.model)  # the route the load starts on
    created = watch.latest_created
    load.start()
    watch.event("load starts; Flux takes over the release")
    # The take-over is an upgrade to what is installed: bounded by helm-controller's default
    # timeout, since the HelmRelease (and any timeout it declares) is not there yet.
    adopt_s = parse_duration(DEFAULT_TIMEOUT)
    hr = watch.until(s.model, lambda o: reconciliation.ready(o)[0] == "True", adopt_s)
    if hr is None or reconciliation.ready(hr)[0] != "True":
        said = "never applied" if hr is None else reconciliation.ready(hr)[1]
        raise BrokenReleaseError(f"HelmRelease {s.model} not Ready after {adopt_s:g}s: {said}")
    before = history(hr)
    adoption = []
    if watch.latest_created != created:  # a label or field Flux's upgrade changed
        adoption.append(f"taking the release over rolled {watch.latest_created} (was {created})")
    s.until(load, load.now() + reliability.BASELINE_S)
    layer = fl.layer
    if layer is None:
        raise BrokenReleaseError("Flux has not taken over a layer")
    values = next(r for r in layer.releases if r.name == s.model).values_file
    if values is None:
        raise BrokenReleaseError(f"{layer.path}: {s.model} has no values file to change")
    text, old, new = break_storage_uri((fl.work / values).read_text(), values)
    commit = fl.publish(values, text, f"{s.model}: model version {MISSING_VERSION}")
    watch.event(f"commit {commit[:12]}: {values} storageUri {old} -> {new}")
    retries, strategy = remediation(hr)
    timeout_s = parse_duration(str(hr["spec"].get("timeout") or DEFAULT_TIMEOUT))
    # Each attempt waits at most the timeout for the upgrade, then for the rollback.
    within = (retries + 1) * 2 * timeout_s
    broke = load.now()
    hr = watch.until(s.model, stalled, within) or hr
    took = load.now() - broke if stalled(hr) else None
    s.until(load, load.now() + reliability.AFTER_S)
    outcomes = load.stop()
    isvc = s.paths.get("inferenceservice", s.model, "-n", s.namespace)
    live = str(isvc["spec"]["predictor"].get("model", {}).get("storageUri", ""))
    budget = reliability.Budget(
        0,
        d.timeout_s,
        within,
        f"the revision before keeps answering while the broken one never gets Ready (Knative "
        f"routes only to Ready revisions); the declared remediation ({retries} retries, "
        f"strategy {strategy}) ends within {retries + 1} x 2 x the HelmRelease's timeout "
        f"({timeout_s:g}s): each try waits for the upgrade, then for the rollback",
        "retries exhausted, rolled back",
    )
    done = reliability.result(
        SCENARIO, budget, outcomes, {s.expected}, watch.events, watch.states, took
    )
    after = history(hr)
    done.table += "\n\nHelm history before: " + "; ".join(before)
    done.table += "\nHelm history after:  " + "; ".join(after)
    done.table += "\nkubelet:\n" + "\n".join(f"  {k}" for k in watch.kubelet)
    done.problems += adoption
    if live != old:
        done.problems.append(f"the live InferenceService serves {live}, not {old}: not rolled back")
    if not watch.kubelet:
        done.problems.append("no pod of the broken version reported a reason (kubelet)")
    return done
