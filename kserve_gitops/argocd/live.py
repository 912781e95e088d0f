"""`kgops argocd-health`: what Argo CD would show for the live InferenceServices, Knative
Services, HelmReleases and Kustomizations of a cluster, next to our customized verdict, without
Argo CD. `live_rows` is the library entry point (a kubeconfig or an ApiClient in, rows out)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from tabulate import tabulate

from kserve_gitops.argocd import health, sources
from kserve_gitops.repo import Repo

# (group, version, plural) of each kind with an Argo CD health check we evaluate: the versions
# this platform serves (KServe v0.20, Knative 1.23, Flux v2.9).
RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("serving.kserve.io", "v1beta1", "inferenceservices"),
    ("serving.knative.dev", "v1", "services"),
    ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
    ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
)


class CustomObjects(Protocol):
    """What is used of kubernetes.client.CustomObjectsApi."""

    def list_cluster_custom_object(self, group: str, version: str, plural: str) -> Any: ...

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str
    ) -> Any: ...


@dataclass(frozen=True)
class Row:
    kind: str
    namespace: str
    name: str
    upstream: health.Verdict  # Argo CD's own check at versions.yaml argocd.version
    ours: health.Verdict  # with argocd/base/argocd-cm.yaml's customizations


def rows(objects: Iterable[dict[str, Any]], repo: Repo | None = None) -> list[Row]:
    """Both verdicts for each object (as the API returns it), sorted by kind, namespace, name."""
    out = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        out.append(
            Row(
                kind=str(obj.get("kind")),
                namespace=str(meta.get("namespace", "")),
                name=str(meta.get("name")),
                upstream=health.evaluate(obj, repo=repo),
                ours=health.evaluate(obj, customized=True, repo=repo),
            )
        )
    return sorted(out, key=lambda r: (r.kind, r.namespace, r.name))


def live_objects(custom: CustomObjects, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every object of RESOURCES in `namespace` (all when None); a kind whose CRD is not
    installed (Flux on an Argo CD cluster) has none."""
    found: list[dict[str, Any]] = []
    for group, version, plural in RESOURCES:
        try:
            if namespace is None:
                listed = custom.list_cluster_custom_object(group, version, plural)
            else:
                listed = custom.list_namespaced_custom_object(group, version, namespace, plural)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        found += listed.get("items") or []
    return found


def live_rows(
    api_client: client.ApiClient | None = None,
    kubeconfig: str | None = None,
    namespace: str | None = None,
    repo: Repo | None = None,
) -> list[Row]:
    """Both verdicts for every live object of RESOURCES: through `api_client` (a
    kubernetes.client.ApiClient), else a client of `kubeconfig` (else KUBECONFIG or
    ~/.kube/config)."""
    api = api_client or config.new_client_from_config(config_file=kubeconfig)
    return rows(live_objects(client.CustomObjectsApi(api), namespace), repo)


def table(found: list[Row], version: str) -> str:
    """Aligned columns, then the message of every verdict that is not Healthy."""
    header = ("KIND", "NAMESPACE", "NAME", f"ARGO CD {version}", "OURS")
    lines = [(r.kind, r.namespace, r.name, r.upstream.status, r.ours.status) for r in found]
    out = [tabulate(lines, header, tablefmt="plain", disable_numparse=True)]
    for r in found:
        for who, verdict in (("Argo CD", r.upstream), ("ours", r.ours)):
            # Our message only where it says something Argo CD's did not.
            if verdict.status != "Healthy" and (who == "Argo CD" or verdict != r.upstream):
                message = " ".join(verdict.message.split())
                out.append(f"{r.kind} {r.namespace}/{r.name} ({who}): {message}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Argo CD's health verdict (its own Lua checks at versions.yaml "
        "argocd.version) of the live InferenceServices, Knative Services, HelmReleases and "
        "Kustomizations, next to ours (argocd/base/argocd-cm.yaml)."
    )
    parser.add_argument("--kubeconfig", help="default: KUBECONFIG, else ~/.kube/config")
    parser.add_argument("--namespace", help="one namespace (default: all)")
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    try:
        found = live_rows(kubeconfig=args.kubeconfig, namespace=args.namespace, repo=repo)
    except (health.HealthCheckError, sources.HealthSourceError, ConfigException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"error: the cluster answered {exc.status} {exc.reason}", file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(table(found, sources.version(repo)))
    return 0
