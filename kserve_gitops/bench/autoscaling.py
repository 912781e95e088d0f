"""What an environment declares for the predictor's autoscaling, read from its manifests as
the policy checks render them (kserve_gitops.repo.render, kserve_gitops.checks.revisions): the
KnativeServing's autoscaler config with Knative's defaults for what it leaves out, the
InferenceService's predictor (replicas, scale target, containerConcurrency, per-revision
annotations) and the revision pod's CPU requests (model and queue-proxy). The benchmark states
these beside its figures, and leaves out the parts the replicas leave nothing to measure in
(Autoscaling.refusals); nothing here is read from a live cluster."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kserve_gitops.checks import revisions
from kserve_gitops.checks.rules import values_file
from kserve_gitops.e2e.reliability import seconds
from kserve_gitops.knative import revision
from kserve_gitops.repo import Repo, render

# Knative Serving 1.23 config-autoscaler defaults (pkg/autoscaler/config/config.go).
KNATIVE_DEFAULTS = {
    "container-concurrency-target-percentage": "70",
    "container-concurrency-target-default": "100",
    "requests-per-second-target-default": "200",
    "target-burst-capacity": "211",
    "stable-window": "60s",
    "panic-window-percentage": "10.0",
    "panic-threshold-percentage": "200.0",
    "max-scale-up-rate": "1000.0",
}
# Autoscaling's fields that are a config-autoscaler number as it stands.
NUMBERS = {
    "utilization_pct": "container-concurrency-target-percentage",
    "target_burst_capacity": "target-burst-capacity",
    "panic_window_pct": "panic-window-percentage",
    "panic_threshold_pct": "panic-threshold-percentage",
    "max_scale_up_rate": "max-scale-up-rate",
}
# Per-revision annotations that override a config-autoscaler key.
ANNOTATIONS = {
    "autoscaling.knative.dev/window": "stable-window",
    "autoscaling.knative.dev/panic-window-percentage": "panic-window-percentage",
    "autoscaling.knative.dev/panic-threshold-percentage": "panic-threshold-percentage",
    "autoscaling.knative.dev/target-burst-capacity": "target-burst-capacity",
    "autoscaling.knative.dev/target-utilization-percentage": (
        "container-concurrency-target-percentage"
    ),
}


@dataclass(frozen=True)
class Autoscaling:
    env: str
    metric: str  # concurrency or rps
    container_concurrency: int  # 0: unlimited
    target: float  # per pod, before the utilization percentage
    target_source: str
    utilization_pct: float
    target_burst_capacity: float  # -1: the activator always in the path
    stable_window_s: float
    panic_window_pct: float
    panic_threshold_pct: float
    max_scale_up_rate: float
    min_replicas: int
    max_replicas: int  # 0: no bound
    pod_cpu_request_m: float  # model container plus queue-proxy
    model_cpu_request_m: float
    values_file: str = ""  # the model's values, where the replicas are declared ('': older record)

    @property
    def panic_window_s(self) -> float:
        return self.stable_window_s * self.panic_window_pct / 100

    def pods_by_cpu(self, cores: int) -> int:
        """How many predictor pods the node's CPUs hold by their requests (before the platform's
        own pods take their share)."""
        return math.floor(cores * 1000 / self.pod_cpu_request_m) if self.pod_cpu_request_m else 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def refusals(self) -> dict[str, str]:
        """The cluster benchmark's parts this configuration leaves nothing to measure in, and
        why, naming the file and field (an environment is never changed for a benchmark)."""
        out = {}
        if self.min_replicas > 0:
            out["cold"] = (
                f"{self.values_file} minReplicas {self.min_replicas}: the revision never scales"
                " to zero, so there is no cold start (needs minReplicas 0)"
            )
        start = max(self.min_replicas, 1)  # from zero, opening the path wakes one pod
        if 0 < self.max_replicas <= start:
            out["scaleout"] = (
                f"{self.values_file} maxReplicas {self.max_replicas}: the ramp starts with"
                f" {start} pod(s) and the configuration allows no more, so there is no"
                " scale-out (needs maxReplicas above max(minReplicas, 1); make bench-cluster"
                " measures it in SCALEOUT_ENV)"
            )
        return out


def _autoscaler(knative_serving: Mapping[str, Any], annotations: Mapping[str, Any]) -> dict:
    declared = ((knative_serving.get("spec") or {}).get("config") or {}).get("autoscaler") or {}
    config = {**KNATIVE_DEFAULTS, **{k: str(v) for k, v in declared.items()}}
    for annotation, key in ANNOTATIONS.items():
        if annotation in annotations:
            config[key] = str(annotations[annotation])
    return config


def _target(metric: str, predictor: Mapping[str, Any], cc: int, config: dict) -> tuple[float, str]:
    """The KPA's per-pod target (Knative's ResolveMetricTarget): scaleTarget when given, else
    containerConcurrency when set, else the config default; never above containerConcurrency."""
    if predictor.get("scaleTarget") is not None:
        target, source = float(predictor["scaleTarget"]), "the predictor's scaleTarget"
    elif metric == "rps":
        target = float(config["requests-per-second-target-default"])
        source = "requests-per-second-target-default"
    elif cc > 0:
        target, source = float(cc), "containerConcurrency"
    else:
        target = float(config["container-concurrency-target-default"])
        source = "container-concurrency-target-default"
    if metric == "concurrency" and cc > 0 and target > cc:
        target, source = float(cc), "containerConcurrency (caps the target)"
    return target, source


def read(repo: Repo, env: str, model: str) -> Autoscaling:
    objs = render.environment_objects(repo, env)
    serving = next((o.body for o in objs if o.kind == "KnativeServing"), {})
    found = [(i, p) for i, p in revisions.revision_pods(repo, objs) if i.name == model]
    if not found:
        raise render.RenderError(f"{env}: no Knative-mode InferenceService {model}")
    isvc, pod = found[0]
    predictor = isvc.body["spec"]["predictor"]
    config = _autoscaler(serving, predictor.get("annotations") or {})
    metric = str(predictor.get("scaleMetric") or "concurrency")
    cc = int(predictor.get("containerConcurrency") or 0)
    target, source = _target(metric, predictor, cc, config)
    cpu = {
        c["name"]: 1000
        * (revision.quantity(c.get("resources", {}).get("requests", {}).get("cpu")) or 0)
        for c in pod["spec"]["containers"]
    }
    return Autoscaling(
        env=env,
        metric=metric,
        container_concurrency=cc,
        target=target,
        target_source=source,
        stable_window_s=seconds(config["stable-window"]),
        **{name: float(config[key]) for name, key in NUMBERS.items()},
        min_replicas=int(predictor.get("minReplicas") or 0),
        max_replicas=int(predictor.get("maxReplicas") or 0),
        pod_cpu_request_m=sum(cpu.values()),
        model_cpu_request_m=cpu.get(revision.MODEL_CONTAINER, 0.0),
        values_file=values_file(isvc),
    )


def describe(a: Autoscaling, cores: int) -> list[str]:
    """The configuration in words, and what bounds the number of pods on this machine."""
    cc = "0 (unlimited)" if a.container_concurrency == 0 else str(a.container_concurrency)
    tbc = (
        "-1 (the activator always in the path)"
        if a.target_burst_capacity < 0
        else (f"{a.target_burst_capacity:g}")
    )
    fit = a.pods_by_cpu(cores)
    bound = (
        f"the configuration's maxReplicas {a.max_replicas} bounds the scale-out before the "
        "machine does"
        if 0 < a.max_replicas <= fit
        else f"the machine bounds the scale-out before maxReplicas "
        f"({a.max_replicas or 'none'}) does"
    )
    return [
        f"- Declared by environment {a.env} (its KnativeServing config and the model's values"
        + (f", {a.values_file}" if a.values_file else "")
        + "):"
        f" containerConcurrency {cc}; target-burst-capacity {tbc}; KPA metric {a.metric},"
        f" target {a.target:g} per pod ({a.target_source}) at {a.utilization_pct:g}%"
        f" utilization; stable window {a.stable_window_s:g} s, panic window"
        f" {a.panic_window_pct:g}% of it ({a.panic_window_s:g} s), panic threshold"
        f" {a.panic_threshold_pct:g}%; max scale-up rate x{a.max_scale_up_rate:g};"
        f" replicas {a.min_replicas}-{a.max_replicas or 'unbounded'}.",
        f"- One node with {cores} cores: each predictor pod requests"
        f" {a.pod_cpu_request_m:g}m CPU ({a.model_cpu_request_m:g}m model,"
        f" {a.pod_cpu_request_m - a.model_cpu_request_m:g}m queue-proxy), so at most {fit}"
        " fit by requests, fewer once the platform's own pods have theirs, and every pod, the"
        f" activator and the load generator share the same {cores} cores: {bound}.",
    ]
