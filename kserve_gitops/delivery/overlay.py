"""The local sources Flux is pointed at, and the test overlay that points it there.

The manifests stay as users get them: a test-only overlay generated under
.cache/flux/<env>/overlay points the GitRepository at the local Git server and, through Flux's
own `spec.patches` on the Kustomization that applies them, the HelmRepository and OCIRepository
objects at the local chart servers (kserve_gitops.delivery.sources), which serve_charts fills
from the chart cache. Nothing else is changed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from kserve_gitops.delivery import sources
from kserve_gitops.delivery.flux import FluxError
from kserve_gitops.repo import Repo, render


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
    return render.kustomize_build(repo, render.flux_entry_point(repo, env))


def chart_sources(repo: Repo, env: str) -> list[Source]:
    """The HelmRepository and OCIRepository objects each Kustomization of clusters/<env>
    applies (and any in the entry point itself)."""
    found: list[Source] = []
    layers = [("", entry_objects(repo, env))] + [
        (lay.name, render.kustomize_build(repo, repo.root / lay.path))
        for lay in render.flux_layers(repo, env)
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
        f"# Generated by kserve_gitops.delivery.overlay for the Flux e2e of {env}: clusters/{env}\n"
        "# with its sources pointed at the local servers. Test only; never committed.\n"
    )
    (dest / "kustomization.yaml").write_text(
        header + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return dest


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
