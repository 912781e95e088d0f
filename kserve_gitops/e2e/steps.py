"""The e2e's step types and the plan that orders them. Every step knows its layer (for
ordering checks and progress lines), a title, and the exact commands it runs; the executor
(kserve_gitops.e2e.executor) adds nothing but the running.

Paths inside steps are as the commands take them: relative to the checkout when inside it, since
every command runs there (the runner's cwd is `plan.repo.root`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kserve_gitops.e2e import model_steps
from kserve_gitops.repo import Repo


@dataclass(frozen=True)
class CreateCluster:
    """`kind create cluster`, writing its credentials to a kubeconfig of its own: every later
    command gets KUBECONFIG=that file, so the run can never act on another cluster."""

    layer: str
    name: str
    config: Path
    node_image: str
    kubeconfig: Path
    wait: str = "120s"

    @property
    def title(self) -> str:
        return f"create kind cluster {self.name}"

    def argv(self) -> list[str]:
        return [
            "kind",
            "create",
            "cluster",
            "--name",
            self.name,
            "--config",
            str(self.config),
            "--image",
            self.node_image,
            "--kubeconfig",
            str(self.kubeconfig),
            "--wait",
            self.wait,
        ]


@dataclass(frozen=True)
class HelmInstall:
    """`helm upgrade --install` of one release, values = declared values + e2e overrides.

    `values` is written to a temporary file (the plan prints it); `value_files` are passed as
    they are, as a user would pass them."""

    layer: str
    release: str
    chart: str
    repository: str | None  # https:// repo, oci:// registry, or None for a chart directory
    version: str | None
    namespace: str
    values: Mapping[str, Any] = field(default_factory=dict)
    values_source: str = ""
    value_files: tuple[Path, ...] = ()
    timeout: str = "10m"
    attempts: int = 1

    @property
    def title(self) -> str:
        where = f" {self.version}" if self.version else ""
        return f"helm install {self.release} ({self.chart}{where}) into {self.namespace}"

    def chart_args(self) -> list[str]:
        if self.repository is None:
            return [self.chart]
        if self.repository.startswith("oci://"):
            return [f"{self.repository.rstrip('/')}/{self.chart}"]
        return [self.chart, "--repo", self.repository]

    def argv(self, values_file: str | None) -> list[str]:
        argv = ["helm", "upgrade", "--install", self.release, *self.chart_args()]
        if self.version:
            argv += ["--version", self.version]
        argv += ["--namespace", self.namespace, "--create-namespace"]
        if values_file:
            argv += ["--values", values_file]
        for path in self.value_files:
            argv += ["--values", str(path)]
        return [*argv, "--wait", "--timeout", self.timeout]


@dataclass(frozen=True)
class Apply:
    """Server-side apply of objects that come from a build `make validate` checks."""

    layer: str
    title: str
    source: str
    objects: tuple[Mapping[str, Any], ...]

    def argv(self, manifest_file: str) -> list[str]:
        # Server-side: no last-applied annotation, so object size is never the limit. One field
        # manager per layer: a later apply can never drop the fields an earlier one set.
        return [
            "kubectl",
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            f"kgops-e2e-{self.layer}",
            "-f",
            manifest_file,
        ]

    def refs(self) -> list[str]:
        return [ref(o) for o in self.objects]


@dataclass(frozen=True)
class Run:
    """One command that must succeed (kubectl wait, kubectl cp, ...)."""

    layer: str
    title: str
    command: tuple[str, ...]
    timeout_s: float = 600

    def argv(self) -> list[str]:
        return list(self.command)


@dataclass(frozen=True)
class Poll:
    """Repeat a command until it succeeds and its output passes `until` (a key of UNTIL): for
    states `kubectl wait` cannot express, e.g. a Service that has a ready endpoint."""

    layer: str
    title: str
    command: tuple[str, ...]
    until: str = "success"
    timeout_s: float = 300
    interval_s: float = 5
    stdin_objects: tuple[Mapping[str, Any], ...] = ()

    def argv(self) -> list[str]:
        return list(self.command)

    def satisfied(self, output: str) -> bool:
        return UNTIL[self.until][1](output)


@dataclass(frozen=True)
class StartLocalCluster:
    """The kwok provider's cluster: real etcd, kube-apiserver, kube-controller-manager and
    kube-scheduler processes, kwok for the kubelet, fake nodes, and the harness's stand-ins;
    with `real_node`, also one real node (kubelet, containerd, runc, kube-proxy, CoreDNS)."""

    layer: str
    env: str
    nodes: int
    real_node: bool = False

    @property
    def title(self) -> str:
        real = (
            " and a real node (kubelet, containerd, runc, kube-proxy, CoreDNS; local images)"
            if self.real_node
            else ""
        )
        return (
            "start the control plane (etcd, kube-apiserver, kube-controller-manager, "
            f"kube-scheduler) with kwok and {self.nodes} fake nodes{real}"
        )


@dataclass(frozen=True)
class NotRun:
    """A step this provider cannot perform; the run reports it as not run, never as passed."""

    layer: str
    title: str
    reason: str


@dataclass(frozen=True)
class CheckCluster:
    """Every workload Available, every pod admitted and scheduled, every claim a pod uses
    bound, every ServiceAccount/ConfigMap/Secret a pod references present."""

    layer: str

    @property
    def title(self) -> str:
        return (
            "check: workloads Available, pods admitted and scheduled, claims bound, "
            "references present"
        )


@dataclass(frozen=True)
class Reapply:
    """The GitOps steady state: applying every layer again changes no object."""

    layer: str
    steps: tuple[HelmInstall | Apply, ...]

    @property
    def title(self) -> str:
        n = len(self.steps)
        return f"steady state: a second apply of {n} releases and layers changes nothing"


@dataclass(frozen=True)
class StartControllers:
    """The kwok provider runs a group of controllers (kserve_gitops.controllers) as processes
    built from source, in place of the kwok pods of their Deployments; their webhooks are
    served from then on."""

    layer: str
    group: str

    @property
    def title(self) -> str:
        return f"start the {self.group} controllers as processes in place of their kwok pods"


@dataclass(frozen=True)
class ObserveChain:
    """Wait for the InferenceService to be Ready, reading the chain the controllers derive
    (KnativeServing, InferenceService, Knative Service, Configuration, Revision, Route,
    Deployment, pods). Passed when Ready; not run when what holds it back needs a component
    the provider cannot run (named with the condition); failed on any other condition."""

    layer: str
    name: str
    namespace: str
    timeout_s: float = 240

    @property
    def title(self) -> str:
        return f"wait: InferenceService {self.namespace}/{self.name} Ready (the chain observed)"


# Any step of a plan: the executor runs and describe prints each by its type.
Step = (
    CreateCluster
    | StartLocalCluster
    | HelmInstall
    | Apply
    | Run
    | Poll
    | model_steps.ResolveHost
    | model_steps.Predict
    | model_steps.LoadTest
    | NotRun
    | CheckCluster
    | Reapply
    | StartControllers
    | ObserveChain
    | model_steps.ClusterCanary
    | model_steps.ClusterPath
    | model_steps.ColdStart
    | model_steps.SloComparison
    | model_steps.Reliability
)


@dataclass(frozen=True)
class Plan:
    """The steps for one environment on one provider, against one checkout (`repo`: where every
    command runs and whose files the steps name)."""

    repo: Repo
    env: str
    cluster: str
    kubeconfig: Path
    namespace: str
    ingress: str
    steps: tuple[Step, ...]
    provider: str = "kind"
    models: tuple[str, ...] = ()  # the InferenceServices it deploys, in order

    def layers(self) -> list[str]:
        return list(dict.fromkeys(s.layer for s in self.steps))


def ref(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')}/{ns}{meta.get('name')}"


def ready_endpoint(output: str) -> bool:
    """True when an EndpointSlice list (kubectl -o json) has an address whose endpoint is ready
    (EndpointSlice v1: a missing `ready` condition means ready)."""
    try:
        slices = json.loads(output).get("items") or []
    except (ValueError, AttributeError):
        return False
    return any(
        ep.get("addresses") and (ep.get("conditions") or {}).get("ready", True) is not False
        for s in slices
        for ep in s.get("endpoints") or []
    )


# Poll conditions: what the plan prints, and the check the executor applies to the output.
UNTIL: dict[str, tuple[str, Any]] = {
    "success": ("until it exits 0", lambda _out: True),
    "output": ("until it exits 0 and prints something", lambda out: bool(out.strip())),
    "ready-endpoint": ("until an EndpointSlice lists a ready address", ready_endpoint),
}
