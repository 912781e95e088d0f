"""The plan as text (`kgops e2e --plan`, `make e2e-plan`): every step's command(s) and what
goes in, without touching anything."""

from __future__ import annotations

import json
from typing import Any

import yaml

from kserve_gitops.e2e.layer_plan import RUNTIME_REGISTRY
from kserve_gitops.e2e.model_steps import ClusterCanary, LoadTest, Predict, Reliability, ResolveHost
from kserve_gitops.e2e.plan import INGRESS_NODE_PORT, kind_config
from kserve_gitops.e2e.steps import (
    UNTIL,
    Apply,
    CheckCluster,
    CreateCluster,
    HelmInstall,
    NotRun,
    ObserveChain,
    Plan,
    Poll,
    Reapply,
    Run,
    StartControllers,
    StartLocalCluster,
    Step,
    ref,
)
from kserve_gitops.localcluster import controlplane
from kserve_gitops.repo import Repo, render
from kserve_gitops.serving import client

HOST_PLACEHOLDER = "<host of status.url>"


def _block(text: str, indent: str = "        | ") -> list[str]:
    return [f"{indent}{line}".rstrip() for line in text.rstrip().splitlines()]


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False) if data else "{}"


def values_placeholder(step: HelmInstall) -> str | None:
    return f"<values of {step.release}>" if step.values else None


def describe_step(step: Step, plan: Plan) -> list[str]:
    """The lines `make e2e-plan` prints for one step: the command(s), then what goes in."""
    repo = plan.repo
    out: list[str] = []
    match step:
        case CreateCluster():
            out.append(f"      $ {' '.join(step.argv())}")
        case StartLocalCluster():
            where = repo.rel(controlplane.cluster_dir(repo, step.env))
            out.append(f"      processes under {where}/, logs in logs/, kubeconfig in kubeconfig")
            out += [f"      stand-in: {line}" for line in STAND_INS]
        case NotRun():
            out.append(f"      NOT RUN on this provider: {step.reason}")
        case StartControllers():
            from kserve_gitops.controllers import processes

            for role in (r for r in processes.ROLES if r.group == step.group):
                out.append(
                    f"      process {role.binary} for Deployment {role.namespace}/"
                    f"{role.deployment} (container {role.container}), own network "
                    "namespace, its ServiceAccount's identity"
                )
            out.append("      then its webhooks are served: their failurePolicy stand-in ends")
        case ClusterCanary():
            out.append(
                f"      in a copy of the repository: kgops rollout canary "
                f"--env {step.env} --version <newest besides stable> --percent "
                f"{step.percent}; rollback; rollback"
            )
            out.append(
                f"      after each: helm upgrade {step.model} with the copy's values file; "
                "the Knative Service's status.traffic must match the stage"
            )
        case ObserveChain():
            out.append(
                f"      reads KnativeServing, InferenceService {step.name}, its Knative "
                "Service, Configuration, Revision, Route, Deployment and pods every 5s "
                f"(up to {step.timeout_s:g}s); conditions go to the report"
            )
            out.append(
                "      not run (not passed) when only what needs a container runtime or "
                "Istio's data plane holds Ready back; failed on anything else"
            )
        case CheckCluster():
            out.append(
                "      reads every Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, "
                "Pod, PVC, ServiceAccount, ConfigMap, Secret, CRD and event"
            )
        case Reapply():
            out += [f"      again: {s.title}" for s in step.steps]
            out.append("      no applied object changes outside its status")
        case HelmInstall():
            out.append(f"      $ {' '.join(step.argv(values_placeholder(step)))}")
            if step.attempts > 1:
                out.append(f"      (up to {step.attempts} attempts)")
            if step.values:
                out.append(f"      <values of {step.release}> = {step.values_source}:")
                out += _block(_yaml(dict(step.values)))
            for path in step.value_files:
                if (repo.root / path).is_relative_to(repo.e2e):
                    out.append(f"      e2e override {repo.rel(repo.root / path)}:")
                    out += _block((repo.root / path).read_text())
            if step.repository is None:
                objs = render.render_chart(
                    repo,
                    repo.root / step.chart,
                    _merged(repo, step),
                    step.release,
                    step.namespace,
                    step.values_source,
                )
                out.append("      renders (the objects `make validate` checks for this env):")
                out += [f"        - {o.ref} in {step.namespace}" for o in objs]
        case Apply():
            out.append(f"      $ {' '.join(step.argv('<manifests>'))}")
            out.append(f"      <manifests> = {step.source}:")
            out += [f"        - {r}" for r in step.refs()]
        case Run():
            out.append(f"      $ {' '.join(step.argv())}")
        case Poll():
            how = UNTIL[step.until][0]
            out.append(f"      $ {' '.join(step.argv())}")
            out.append(f"      every {step.interval_s:g}s for up to {step.timeout_s:g}s, {how}")
            if step.stdin_objects:
                out.append("      stdin: " + ", ".join(ref(o) for o in step.stdin_objects))
        case ResolveHost():
            out.append(f"      $ {' '.join(step.argv())}")
        case Predict():
            path = client.predict_path(step.protocol, step.model)
            body = json.dumps(client.request_body(step.protocol, step.instances))
            out.append(f"      POST {plan.ingress}{path}  Host: {HOST_PLACEHOLDER}")
            out.append(f"      body {body}")
            out.append(
                f"      expect {list(step.expected)}; retries connection errors, 404 (route not "
                f"yet programmed) and 429/502/503/504 for up to {step.timeout_s:g}s"
            )
        case LoadTest():
            argv = step.argv(plan.ingress, HOST_PLACEHOLDER, "reports/e2e-<timestamp>/loadtest")
            out.append(f"      $ {' '.join(argv)}")
            out.append("      fails the run when the SLO verdict is a miss")
    return out


def _merged(repo: Repo, step: HelmInstall) -> dict[str, Any]:
    values = dict(step.values)
    for path in step.value_files:
        values.update(render.model_values(repo, repo.root / path))
    return values


# What the harness does in place of components that cannot run on the kwok provider
# (kserve_gitops.localcluster.standins), printed by the plan and the summary.
STAND_INS = (
    "kwok stands in for the kubelet: pods are scheduled and marked Running, no container runs",
    "webhooks with failurePolicy Fail get Ignore until their server runs as a process "
    "(kserve_gitops.controllers); each one still ignored is listed",
    "cert-manager: Certificates get Secrets from the harness CA, and CA bundles are injected",
    "volumes: each PersistentVolumeClaim gets a PersistentVolume made for it",
    f"image digests: the KnativeServing's registries-skipping-tag-resolving gets "
    f"{RUNTIME_REGISTRY} (no registry is reachable; revisions run the image tag)",
)


def describe_kwok(plan: Plan) -> list[str]:
    repo = plan.repo
    cfg = controlplane.ClusterConfig.load(repo)
    kube = repo.versions.get("kubernetes") or {}
    not_run = sum(isinstance(s, NotRun) for s in plan.steps)
    scenarios = any(isinstance(s, Reliability) for s in plan.steps)
    command = (
        f"make e2e-reliability ENV={plan.env}"
        if scenarios
        else f"make e2e CLUSTER={plan.provider} ENV={plan.env}"
    )
    return [
        f"e2e plan for {plan.env} on {plan.provider}: nothing below has run; `{command}` runs "
        f"these {len(plan.steps)} steps ({not_run} of them are not run on this provider and are "
        "reported so), then stops the cluster (KEEP=1 keeps it).",
        f"  cluster  {plan.cluster}: Kubernetes {kube.get('version')} built from source, "
        f"{cfg.nodes} kwok nodes of {cfg.cpu} CPU / {cfg.memory}, pod IPs from {cfg.pod_cidr}, "
        f"{repo.rel(controlplane.config_file(repo))}",
        f"  pins     {repo.rel(repo.versions_file)}, through the Flux declarations of "
        f"clusters/{plan.env}; upstream charts from the chart cache (`make charts`)",
        f"  access   every command runs with KUBECONFIG={repo.rel(plan.kubeconfig)}",
        "  report   reports/e2e-<timestamp>/: plan, commands, final state per layer, events, "
        "component logs",
    ]


# What the real-node provider changes for the test only (kserve_gitops.e2e.node_plan).
REAL_NODE = (
    "one real node (kubelet, containerd, runc, kube-proxy, CoreDNS as a pod), tainted "
    "kgops.dev/node=real:NoSchedule; the fake nodes keep everything else",
    "images: built locally from the pinned sources (make images, dev.local/kserve-gitops/...), "
    "imported into containerd, never pulled",
    "KnativeServing: registry.override and queue-sidecar-image name the local images; "
    "workloads activator, autoscaler, controller, webhook select and tolerate the real node",
    "model namespaces: PodNodeSelector and PodTolerationRestriction annotations put every "
    "pod there (the InferenceService is unchanged)",
    "istio-cni, ztunnel: a node affinity for the fake nodes (not buildable here)",
    "kserve-runtime-configs: the sklearnserver runtime image is the local one",
)


def describe(plan: Plan) -> str:
    if plan.provider in ("kwok", "node"):
        lines = describe_kwok(plan)
        if plan.provider == "node":
            lines += ["", "real-node overlay (the test only, not the environment):"]
            lines += [f"  - {line}" for line in REAL_NODE]
        return _describe_steps(plan, lines)
    repo = plan.repo
    kube = repo.versions.get("kubernetes") or {}
    kind_file = kind_config(repo)
    lines = [
        f"e2e plan for {plan.env}: nothing below has run; `make e2e ENV={plan.env}` runs exactly "
        f"these {len(plan.steps)} steps, then deletes the cluster (KEEP=1 keeps it).",
        f"  cluster  {plan.cluster}: kind {kube.get('kind')}, Kubernetes {kube.get('version')}, "
        f"{repo.rel(kind_file)}",
        f"  ingress  {plan.ingress} (Istio ingress gateway NodePort {INGRESS_NODE_PORT}, "
        "mapped to the host by kind)",
        f"  pins     {repo.rel(repo.versions_file)}, through the Flux declarations of "
        f"clusters/{plan.env}",
        f"  access   every command runs with KUBECONFIG={repo.rel(plan.kubeconfig)} "
        "(your own kubeconfig is never used)",
        "  on failure: events, pod logs of every platform namespace, InferenceService/Knative "
        "status and the Locust report go to reports/e2e-<timestamp>/",
        "",
        f"kind cluster config ({repo.rel(kind_file)}):",
        *_block(kind_file.read_text(), "    | "),
    ]
    return _describe_steps(plan, lines)


def _describe_steps(plan: Plan, lines: list[str]) -> str:
    layer = None
    for number, step in enumerate(plan.steps, start=1):
        if step.layer != layer:
            layer = step.layer
            lines += ["", f"[{layer}]"]
        lines.append(f"  {number:>2}. {step.title}")
        lines += describe_step(step, plan)
    return "\n".join(lines) + "\n"
