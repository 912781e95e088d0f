"""Diagnostics of a failed run: what it leaves for whoever reads the CI artifact (cluster-wide
state, events, pod logs of every namespace the plan installs into)."""

from __future__ import annotations

from pathlib import Path

from kserve_gitops.base import redact
from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.e2e.steps import Apply, HelmInstall, Plan


def platform_namespaces(plan: Plan) -> list[str]:
    return list(dict.fromkeys(ns for names in layer_namespaces(plan).values() for ns in names))


KNATIVE_OBJECTS = ",".join(
    f"{kind}.serving.knative.dev" for kind in ("services", "configurations", "revisions", "routes")
)
ISTIO_ROUTING = "gateways.networking.istio.io,virtualservices.networking.istio.io"
WEBHOOKS = "validatingwebhookconfigurations,mutatingwebhookconfigurations"
# File in the diagnostics folder -> the command whose output it holds.
CLUSTER_WIDE: dict[str, str] = {
    "nodes.txt": "kubectl describe nodes",
    "events.txt": "kubectl get events -A --sort-by=.lastTimestamp",
    "pods.txt": "kubectl get pods -A -o wide",
    "helm-releases.txt": "helm list -A",
    "inferenceservices.yaml": "kubectl get inferenceservices -A -o yaml",
    "inferenceservices-describe.txt": "kubectl describe inferenceservices -A",
    "knativeserving.yaml": "kubectl get knativeservings -A -o yaml",
    "knative-serving-objects.yaml": f"kubectl get {KNATIVE_OBJECTS} -A -o yaml",
    "clusterservingruntimes.yaml": "kubectl get clusterservingruntimes -o yaml",
    "certificates.yaml": "kubectl get certificates,issuers -A -o yaml",
    "istio-routing.yaml": f"kubectl get {ISTIO_ROUTING} -A -o yaml",
    "webhooks.yaml": f"kubectl get {WEBHOOKS} -o yaml",
}


def collect_diagnostics(plan: Plan, runner: Runner, dest: Path) -> list[str]:
    """Best effort: each command that fails leaves its error in its file instead. Every file
    is redacted (kserve_gitops.base.redact): Secrets keep their keys, their values go."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def save(name: str, argv: tuple[str, ...] | list[str]) -> str:
        path = dest / name
        try:
            out = runner.run(list(argv), timeout=120, quiet=True)
        except (CommandError, OSError) as exc:
            out = f"# {exc}\n"
        redact.write_text(path, out)
        written.append(name)
        return out

    for name, command in CLUSTER_WIDE.items():
        save(name, command.split())
    for ns in platform_namespaces(plan):
        save(f"{ns}/resources.txt", ("kubectl", "get", "all", "-n", ns, "-o", "wide"))
        save(f"{ns}/events.txt", ("kubectl", "get", "events", "-n", ns, "--sort-by=.lastTimestamp"))
        save(f"{ns}/pods-describe.txt", ("kubectl", "describe", "pods", "-n", ns))
        pods = save(
            f"{ns}/pod-names.txt",
            ("kubectl", "get", "pods", "-n", ns, "-o", "jsonpath={.items[*].metadata.name}"),
        )
        for pod in pods.split() if not pods.startswith("#") else []:
            save(
                f"{ns}/logs/{pod}.log",
                ("kubectl", "logs", pod, "-n", ns, "--all-containers", "--prefix", "--tail=2000"),
            )
    if plan.provider == "kind":
        save(
            "kind-export-logs.txt",
            ("kind", "export", "logs", str(dest / "kind"), "--name", plan.cluster),
        )
        if (dest / "kind").is_dir():  # written by kind itself: the node's and pods' logs
            redact.sweep(dest / "kind")
    return written


def layer_namespaces(plan: Plan) -> dict[str, list[str]]:
    """Layer -> the namespaces its releases install into and its manifests declare."""
    found: dict[str, list[str]] = {}
    for step in plan.steps:
        names: list[str | None] = []
        if isinstance(step, HelmInstall):
            names.append(step.namespace)
        elif isinstance(step, Apply):
            for obj in step.objects:
                meta = obj.get("metadata") or {}
                names.append(meta.get("name") if obj.get("kind") == "Namespace" else None)
                names.append(meta.get("namespace"))
        layer = found.setdefault(step.layer, [])
        layer += [n for n in names if n and n not in layer]
    return {k: v for k, v in found.items() if v}
