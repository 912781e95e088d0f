"""What Flux and what Argo CD install for an environment, normalised to one shape (`Component`)
so the two declarations can be compared step by step, and described side by side."""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass

from tabulate import tabulate

from kserve_gitops.repo import Repo, argocd, flux


@dataclass(frozen=True)
class Component:
    """What one tool installs for one component, normalised so Flux and Argo CD compare."""

    wave: int  # install step: every component of a wave is Ready before the next wave starts
    layer: str
    key: str  # release name for charts, repository path for plain manifests
    chart: str
    repository: str
    version: str  # "" for sources in this repository (they follow the Git revision)
    namespace: str
    values_files: tuple[str, ...]

    @property
    def name(self) -> str:
        """How the ordering constraints name it: the release, or the layer of plain manifests."""
        return self.key if self.chart else self.layer


def flux_components(repo: Repo, env: str) -> list[Component]:
    """Flux's install steps for `env`: a layer starts after the layers it dependsOn end (not
    merely after the previous one), a release after the releases it dependsOn."""
    found: list[Component] = []
    ends: dict[str, int] = {}  # layer -> its last step
    for layer in flux.layers(repo, env):
        start = max((ends[d] + 1 for d in layer.depends_on if d in ends), default=0)
        short = layer.name.removeprefix("platform-")
        waves: dict[str, int] = {}
        for r in layer.releases:  # already in dependsOn order
            waves[r.name] = max((waves[d] + 1 for d in r.depends_on if d in waves), default=start)
            found.append(
                Component(
                    waves[r.name],
                    short,
                    r.name,
                    r.chart,
                    "" if r.local else r.repository,
                    "" if r.local else r.version,
                    r.namespace,
                    r.values_files,
                )
            )
        if layer.manifests:
            namespaces = sorted({str(m["metadata"].get("namespace", "")) for m in layer.manifests})
            ns = next((n for n in namespaces if n), "")
            found.append(Component(start, short, layer.path, "", "", "", ns, ()))
            waves[layer.path] = start
        ends[layer.name] = max(waves.values(), default=start)
    return found


def argocd_components(repo: Repo, env: str) -> list[Component]:
    """Argo CD's install order for `env`: the sync waves of the generated Applications."""
    found = []
    for app in argocd.applications(repo, env):
        repository = app.repository
        if app.chart and not app.chart.startswith("./") and "://" not in repository:
            repository = f"oci://{repository}/{app.chart}"  # Helm OCI repository + chart name
        ours = app.path is not None
        found.append(
            Component(
                app.wave,
                app.layer,
                app.component if app.chart else str(app.path),
                app.chart,
                "" if ours else repository,
                "" if ours else app.version,
                app.namespace,
                app.value_files,
            )
        )
    return found


def differences(repo: Repo, env: str) -> list[str]:
    """Where Flux and Argo CD disagree for `env` (components, versions, order, values), each
    naming the ApplicationSet element to fix."""
    flux_plan = {c.key: c for c in flux_components(repo, env)}
    argo_plan = {c.key: c for c in argocd_components(repo, env)}
    where = {a.component if a.chart else str(a.path): a for a in argocd.applications(repo, env)}
    out = [
        f"{env}: {k}: only Flux installs it (no element in the ApplicationSet of "
        f"{repo.rel(argocd.entry_point(repo, env))})"
        for k in flux_plan.keys() - argo_plan.keys()
    ]
    out += [
        f"{env}: {k}: only Argo CD installs it ({where[k].element})"
        for k in argo_plan.keys() - flux_plan.keys()
    ]
    for key in sorted(flux_plan.keys() & argo_plan.keys()):
        f, a = asdict(flux_plan[key]), asdict(argo_plan[key])
        out += [
            f"{env}: {key}: {field_} differs: Flux {f[field_]!r}, Argo CD {a[field_]!r} "
            f"({where[key].element})"
            for field_ in f
            if f[field_] != a[field_]
        ]
    return sorted(out)


def describe(repo: Repo, env: str) -> str:
    """Both tools' install plan for `env`, one line per component, in order."""
    flux_plan = flux_components(repo, env)
    argo_plan = {c.key: c for c in argocd_components(repo, env)}
    head = ("wave", "layer", "component", "chart", "version", "tools")
    # Plain-manifest layers: name the custom resources they apply, a versioned one first
    # (KnativeServing 1.23.0 rather than the NetworkPolicies beside it).
    crs = {
        lay.path: next(
            (
                (m["kind"], str(m["spec"].get("version", "git")))
                for m in sorted(lay.manifests, key=lambda m: "version" not in m.get("spec", {}))
                if "spec" in m
            ),
            ("(kustomize)", "git"),
        )
        for lay in flux.layers(repo, env)
    }
    rows = []
    for c in sorted(flux_plan, key=lambda c: c.wave):
        same = "Flux + Argo CD" if argo_plan.get(c.key) == c else "Flux only, or DIFFERENT"
        chart, version = (c.chart, c.version or "git") if c.chart else crs[c.key]
        rows.append((c.wave, c.layer, c.key, chart, version, same))
    # No numparse: a version such as 1.10 would be printed as 1.1.
    table = tabulate(rows, head, tablefmt="plain", disable_numparse=True)
    lines = [f"{env}:", textwrap.indent(table, "  ")]
    apps = argocd.applications(repo, env)
    sync = "automated, wave by wave" if all(a.automated for a in apps) else "manual (gated)"
    lines.append(f"  Flux: Kustomizations in dependsOn order; Argo CD sync: {sync}")
    lines += [f"  ! {d}" for d in differences(repo, env)]
    return "\n".join(lines)
