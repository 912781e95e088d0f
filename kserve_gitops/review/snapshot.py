"""Everything an environment applies at the tree a `Repo` points at, rendered the way Flux
and Argo CD render it, for comparing two revisions.

Per environment: the Flux entry point `clusters/<env>`, every layer Flux applies from it (each
kustomization as built), each HelmRelease's chart rendered with the values it carries (our chart
from this tree; upstream charts from the chart cache of kserve_gitops.upstream.charts), the
Argo CD entry point `argocd/<env>` and the Applications its ApplicationSet generates. Argo CD
deploys the same charts with the same values files (`make platform` checks that), so their
objects are rendered once.

    KGOPS_ROOT=<tree> python -m kserve_gitops.review.snapshot --chart-cache DIR   # JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kserve_gitops.repo import Repo, argocd, flux, render
from kserve_gitops.repo.render import RenderError
from kserve_gitops.upstream import charts


@dataclass
class Environment:
    objects: list[dict[str, Any]] = field(default_factory=list)
    # What could not be rendered and why (an upstream chart missing from the cache).
    notes: list[str] = field(default_factory=list)
    unrendered: dict[str, str] = field(default_factory=dict)  # chart and version -> reason


def _release_objects(
    repo: Repo, release: flux.Release, layer: str, chart_cache: Path, env: Environment
) -> None:
    if release.local:
        chart_dir = repo.root / release.chart
    else:
        ref = charts.ChartRef(release.chart, release.version, release.repository)
        try:
            chart_dir = charts.ensure(repo, ref, chart_cache)
        except charts.ChartError as exc:
            env.unrendered[str(ref)] = str(exc)
            return
    source = f"{layer}: HelmRelease {release.name}"
    objs = render.render_chart(
        repo, chart_dir, release.values, release.name, release.namespace, source
    )
    env.objects += [o.body for o in objs]


def environment(repo: Repo, env: str, chart_cache: Path) -> Environment:
    """What `env` applies at this tree: Flux's layers and charts, then Argo CD's Applications."""
    out = Environment()
    out.objects += render.kustomize_build(repo, render.flux_entry_point(repo, env))
    for layer in flux.layers(repo, env):
        out.objects += render.kustomize_build(repo, repo.root / layer.path)
        for release in layer.releases:
            _release_objects(repo, release, layer.path, chart_cache, out)
    if (repo.root / "argocd" / env / "kustomization.yaml").is_file():
        out.objects += render.kustomize_build(repo, argocd.entry_point(repo, env))
        out.objects += argocd.generated(repo, env)
    if out.unrendered:
        first = next(iter(out.unrendered.values()))
        out.notes.append(
            f"upstream charts not rendered, only their HelmReleases and values compared: "
            f"{', '.join(sorted(out.unrendered))} ({first})"
        )
    return out


def prepare_charts(repo: Repo, chart_cache: Path) -> None:
    """Fill the cache with this tree's charts up front, so the base's renderer, running at the
    same time, only ever adds other versions (two writers of one chart would collide)."""
    for env in repo.environment_names:
        for layer in flux.layers(repo, env):
            for r in layer.releases:
                if not r.local:
                    try:
                        ref = charts.ChartRef(r.chart, r.version, r.repository)
                        charts.ensure(repo, ref, chart_cache)
                    except charts.ChartError:
                        continue  # reported as a note when the environment is rendered


def environments(repo: Repo, chart_cache: Path) -> dict[str, Environment]:
    return {env: environment(repo, env, chart_cache) for env in repo.environment_names}


def to_json(envs: dict[str, Environment]) -> str:
    return json.dumps({name: {"objects": e.objects, "notes": e.notes} for name, e in envs.items()})


def from_json(text: str) -> dict[str, Environment]:
    data = json.loads(text)
    return {name: Environment(e["objects"], e["notes"]) for name, e in data.items()}


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(description="Every environment's rendered objects as JSON.")
    parser.add_argument("--chart-cache", type=Path, help="default: .cache/charts")
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    try:
        text = to_json(environments(repo, args.chart_cache or charts.cache_dir(repo)))
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
