"""The e2e's step types that exercise the deployed model: reading its host, predictions, the
Locust SLO test, the real node's cluster paths, cold start, the reliability scenarios and the
canary on the cluster. Like every step (kserve_gitops.e2e.steps), each says what it does;
the executor (kserve_gitops.e2e.executor) runs it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


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
