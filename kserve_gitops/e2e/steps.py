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
class ResolveHost:
    """Read the InferenceService URL: its host is the Host header the ingress routes on."""

    layer: str
    name: str
    namespace: str

    @property
    def title(self) -> str:
        return f"read InferenceService {self.namespace}/{self.name} status.url (the Host header)"

    def argv(self) -> list[str]:
        return [
            "kubectl",
            "get",
            "inferenceservice",
            self.name,
            "-n",
            self.namespace,
            "-o",
            "jsonpath={.status.url}",
        ]


@dataclass(frozen=True)
class Predict:
    layer: str
    model: str
    protocol: str
    instances: tuple[tuple[float, ...], ...]
    expected: tuple[int, ...]
    timeout_s: float = 120
    path: str | None = None  # a ClusterPath opened before (real node); None: the ingress

    @property
    def title(self) -> str:
        rows = json.dumps([list(r) for r in self.instances])
        via = f" via {self.path}" if self.path else ""
        return f"predict {self.protocol}{via} {rows} -> {list(self.expected)}"


@dataclass(frozen=True)
class LoadTest:
    """`kgops loadtest`; rate, duration and targets come from
    config/slo.yaml (or `slo_config`) for the environment unless `duration` is given."""

    layer: str
    env: str
    model: str
    protocol: str
    duration: str | None = None
    slo_config: Path | None = None
    path: str | None = None  # a ClusterPath opened before (real node); None: the ingress

    @property
    def title(self) -> str:
        via = f" via {self.path}" if self.path else ""
        return f"Locust SLO test{via} ({self.protocol}, config/slo.yaml targets for {self.env})"

    def argv(self, target: str, host: str | None, reports: str) -> list[str]:
        return [
            "python",
            "-m",
            "kserve_gitops.load.loadtest",
            "--target",
            target,
            *(["--host-header", host] if host else []),
            "--protocol",
            self.protocol,
            "--model",
            self.model,
            "--env",
            self.env,
            "--reports",
            reports,
            *(["--duration", self.duration] if self.duration else []),
            *(["--slo-config", str(self.slo_config)] if self.slo_config else []),
        ]


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
class ClusterPath:
    """Open one way into the model through the real node's cluster (the real-node provider),
    which the Predict and LoadTest steps naming it then use:
    - "service": the revision's private Kubernetes Service, through kube-proxy's rules to
      queue-proxy in the predictor pod;
    - "port-forward": `kubectl port-forward` to the predictor pod's model server (the API
      server and the kubelet in the path; the report's path).
    """

    layer: str
    model: str
    namespace: str
    path: str

    @property
    def title(self) -> str:
        how = {
            "service": "the revision's Service (kube-proxy, queue-proxy)",
            "port-forward": "kubectl port-forward to the predictor pod",
        }[self.path]
        return f"open the cluster path {self.path}: {how}"


@dataclass(frozen=True)
class ColdStart:
    """Scale from zero through Knative's activator: wait until the revision has no pod (the
    environment's scale-to-zero), then send one prediction to the revision's public Service
    (its endpoints are the activator's) and time it to the answer."""

    layer: str
    model: str
    namespace: str
    instances: tuple[tuple[float, ...], ...]
    expected: tuple[int, ...]
    timeout_s: float = 300

    @property
    def title(self) -> str:
        want = list(self.expected)
        return f"cold start: scale to zero, then predict through the activator -> {want}"


@dataclass(frozen=True)
class SloComparison:
    """The same Locust SLO test against the model served locally (what `make demo` measures),
    then one table: each target with the local figure beside each cluster path's."""

    layer: str
    env: str
    model: str
    paths: tuple[str, ...]

    @property
    def title(self) -> str:
        return f"SLO table: local beside {', '.join(self.paths)} (config/slo.yaml, {self.env})"


@dataclass(frozen=True)
class Reliability:
    """One scenario of kserve_gitops.e2e.reliability on the real node: open-loop load through
    the revision's public Service while the service scales from zero or a fault hits the node,
    checked against a budget the environment's declared timeouts give."""

    layer: str
    scenario: str
    model: str
    namespace: str
    instances: tuple[tuple[float, ...], ...]
    expected: tuple[int, ...]
    percent: int  # the rollout's canary share

    @property
    def title(self) -> str:
        what = {
            "rollout": f" (canary {self.percent}%, rollback)",
            "broken-release": " (applied by Flux, rolled back by its remediation)",
        }.get(self.scenario, "")
        return f"reliability: {self.scenario}{what} under open-loop load"


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


@dataclass(frozen=True)
class ClusterCanary:
    """`make canary` (the newest registered version beside the stable one), then `make rollback`
    twice, each edit installed on the cluster from a repository copy; the traffic split KServe
    and Knative compute must follow each stage (kserve_gitops.controllers.canary)."""

    layer: str
    env: str
    model: str
    namespace: str
    percent: int

    @property
    def title(self) -> str:
        return (
            f"canary on the cluster: make canary PERCENT={self.percent}, make rollback twice; "
            "traffic split per stage"
        )


# The canary share the kwok e2e rolls out (and back) on the running InferenceService.
Step = (
    CreateCluster
    | StartLocalCluster
    | HelmInstall
    | Apply
    | Run
    | Poll
    | ResolveHost
    | Predict
    | LoadTest
    | NotRun
    | CheckCluster
    | Reapply
    | StartControllers
    | ObserveChain
    | ClusterCanary
    | ClusterPath
    | ColdStart
    | SloComparison
    | Reliability
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
