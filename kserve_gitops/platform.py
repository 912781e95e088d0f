"""The platform each environment declares, read back from its Flux manifests.

`layers(env)` kustomize-builds `clusters/<env>` (the Flux entry point), follows the
Kustomizations in `dependsOn` order and, for each layer, returns the Helm releases it
declares (chart, repository, version, values, target namespace) and the plain manifests it
applies. The e2e installs exactly that with the helm CLI, and the GitOps consistency tests
compare it with the Argo CD declaration and with versions.yaml.

    python -m kserve_gitops.platform --env dev     # layers and components of dev
    python -m kserve_gitops.platform               # every environment
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops import argocd, paths, render
from kserve_gitops.render import RenderError

FLUX_SOURCE_KINDS = ("GitRepository", "HelmRepository", "OCIRepository")
# Objects Flux controllers act on; everything else in a layer is a plain manifest.
FLUX_KINDS = {*FLUX_SOURCE_KINDS, "HelmRelease", "Kustomization"}
OUR_CHART = "./charts/inference-service"


@dataclass(frozen=True)
class Release:
    """One Helm release, as `helm upgrade --install` would take it."""

    name: str
    namespace: str
    chart: str  # chart name in its repository, or ./charts/... in this repository
    repository: str  # https:// Helm repository, oci:// chart reference, or this Git repository
    version: str  # "" for our chart (its Chart.yaml version)
    values: dict[str, Any]
    values_file: str | None  # repository file the values come from (relative to ROOT)
    depends_on: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        return self.chart.startswith("./")

    def helm_argv(self) -> list[str]:
        """`helm upgrade --install` arguments that install this release by hand."""
        if self.local:
            ref = str(paths.ROOT / self.chart)
        elif self.repository.startswith("oci://"):
            ref = self.repository
        else:
            ref = self.chart
        argv = ["upgrade", "--install", self.name, ref, "--namespace", self.namespace]
        argv += ["--create-namespace"]
        if not self.local and not self.repository.startswith("oci://"):
            argv += ["--repo", self.repository]
        if self.version:
            argv += ["--version", self.version]
        if self.values_file:
            argv += ["-f", str(paths.ROOT / self.values_file)]
        return [*argv, "--wait", "--timeout", "10m"]


@dataclass(frozen=True)
class Layer:
    """One Flux Kustomization: what it applies, after which layers."""

    name: str
    path: str  # relative to ROOT
    depends_on: tuple[str, ...]
    releases: tuple[Release, ...]
    manifests: tuple[dict[str, Any], ...] = field(default=())  # plain objects (no Flux kinds)

    @property
    def manifests_path(self) -> str | None:
        """Where `kubectl apply -k` would apply this layer's plain manifests, if any."""
        return self.path if self.manifests else None


def load_versions(path: Path | None = None) -> dict[str, Any]:
    """versions.yaml, the one pin file."""
    path = path or paths.VERSIONS
    data = render.load_yaml_file(path)
    if not isinstance(data, dict):
        raise RenderError(f"{paths.rel(path)}: expected a mapping of components")
    return data


def _require(obj: dict[str, Any], dotted: str, where: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise RenderError(f"{where}: missing field {dotted}")
        cur = cur[part]
    return cur


def _ordered(items: dict[str, tuple[str, ...]], where: str) -> list[str]:
    """Names in dependency order (stable: declaration order among independent ones)."""
    done: list[str] = []
    pending = list(items)
    while pending:
        ready = [n for n in pending if all(d in done for d in items[n])]
        if not ready:
            missing = {d for n in pending for d in items[n] if d not in items}
            why = f"unknown {sorted(missing)}" if missing else f"a cycle among {pending}"
            raise RenderError(f"{where}: dependsOn cannot be satisfied: {why}")
        done.append(ready[0])
        pending.remove(ready[0])
    return done


def _generated_files(kustomization_dir: Path) -> dict[str, str]:
    """configMapGenerator name -> the file it reads (relative to ROOT)."""
    kfile = kustomization_dir / "kustomization.yaml"
    data = render.load_yaml_file(kfile) if kfile.is_file() else None
    found: dict[str, str] = {}
    for gen in (data or {}).get("configMapGenerator") or []:
        for entry in gen.get("files") or []:
            source = str(entry).split("=", 1)[-1]
            found[gen["name"]] = paths.rel(kustomization_dir / source)
    return found


def _hashed(generator: str, ref: dict[str, Any]) -> tuple[str, ...]:
    name = str(ref.get("name", ""))
    suffix = name.removeprefix(f"{generator}-")
    return (name,) if suffix != name and "-" not in suffix else ()


def _source_repository(source: dict[str, Any], where: str) -> str:
    return str(_require(source, "spec.url", where))


def _release(
    hr: dict[str, Any],
    sources: dict[tuple[str, str], dict[str, Any]],
    config_maps: dict[str, dict[str, Any]],
    generated: dict[str, str],
    where: str,
) -> Release:
    name = hr["metadata"]["name"]
    spec = hr.get("spec") or {}
    here = f"{where}: HelmRelease/{name}"
    if "chartRef" in spec:
        ref = spec["chartRef"]
        source = sources.get((ref.get("kind", ""), ref.get("name", "")))
        if source is None:
            raise RenderError(f"{here}: spec.chartRef: no {ref.get('kind')}/{ref.get('name')}")
        repository = _source_repository(source, here)
        chart = repository.rstrip("/").rsplit("/", 1)[-1]
        version = str((source["spec"].get("ref") or {}).get("tag", ""))
    else:
        chart_spec = _require(spec, "chart.spec", here)
        chart = str(_require(chart_spec, "chart", here))
        src_ref = _require(chart_spec, "sourceRef", here)
        source = sources.get((src_ref.get("kind", ""), src_ref.get("name", "")))
        if source is None:
            raise RenderError(
                f"{here}: spec.chart.spec.sourceRef: no {src_ref.get('kind')}/{src_ref.get('name')}"
            )
        repository = _source_repository(source, here)
        version = str(chart_spec.get("version", ""))
    values: dict[str, Any] = {}
    values_file = None
    for ref in spec.get("valuesFrom") or []:
        cm = config_maps.get(ref.get("name", ""))
        if ref.get("kind") != "ConfigMap" or cm is None:
            raise RenderError(f"{here}: spec.valuesFrom: no ConfigMap {ref.get('name')!r}")
        text = (cm.get("data") or {}).get(ref.get("valuesKey", "values.yaml"))
        if text is None:
            raise RenderError(f"{here}: ConfigMap {ref['name']} has no key values.yaml")
        values.update(yaml.safe_load(text) or {})
        # kustomize names a generated ConfigMap <generator name>-<content hash>.
        values_file = next(
            (f for gen, f in generated.items() if ref["name"] in (gen, *_hashed(gen, ref))), None
        )
    values.update(spec.get("values") or {})
    return Release(
        name=str(spec.get("releaseName", name)),
        namespace=str(spec.get("targetNamespace", hr["metadata"].get("namespace", "default"))),
        chart=chart,
        repository=repository,
        version=version,
        values=values,
        values_file=values_file,
        depends_on=tuple(d["name"] for d in spec.get("dependsOn") or []),
    )


def layers(env: str) -> list[Layer]:
    """The layers Flux applies for `env`, in dependsOn order."""
    cluster_dir = paths.ROOT / "clusters" / env
    if not (cluster_dir / "kustomization.yaml").is_file():
        raise RenderError(f"clusters/{env}/kustomization.yaml: no Flux entry point for {env}")
    where = f"clusters/{env}"
    top = render.kustomize_build(cluster_dir)
    kustomizations = {o["metadata"]["name"]: o for o in top if o.get("kind") == "Kustomization"}
    if not kustomizations:
        raise RenderError(f"{where}: no Flux Kustomization")
    deps = {
        n: tuple(d["name"] for d in (k.get("spec") or {}).get("dependsOn") or [])
        for n, k in kustomizations.items()
    }
    built: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    sources: dict[tuple[str, str], dict[str, Any]] = {
        (o["kind"], o["metadata"]["name"]): o for o in top if o.get("kind") in FLUX_SOURCE_KINDS
    }
    for name, ks in kustomizations.items():
        rel_path = str(_require(ks, "spec.path", f"{where}: Kustomization/{name}"))
        rel_path = rel_path.removeprefix("./").rstrip("/")
        layer_dir = paths.ROOT / rel_path
        if not (layer_dir / "kustomization.yaml").is_file():
            raise RenderError(
                f"{where}: Kustomization/{name}: spec.path {rel_path} has no kustomization.yaml"
            )
        objs = render.kustomize_build(layer_dir)
        built[name] = (rel_path, objs)
        sources |= {
            (o["kind"], o["metadata"]["name"]): o
            for o in objs
            if o.get("kind") in FLUX_SOURCE_KINDS
        }
    result: list[Layer] = []
    for name in _ordered(deps, where):
        rel_path, objs = built[name]
        config_maps = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ConfigMap"}
        generated = _generated_files(paths.ROOT / rel_path)
        hrs = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "HelmRelease"}
        releases = {
            n: _release(hr, sources, config_maps, generated, rel_path) for n, hr in hrs.items()
        }
        local_deps = {n: tuple(d for d in r.depends_on if d in hrs) for n, r in releases.items()}
        order = _ordered(local_deps, rel_path)
        plain = tuple(
            o
            for o in objs
            if o.get("kind") not in FLUX_KINDS
            and not (o.get("kind") == "ConfigMap" and o["metadata"]["name"] in _values_maps(hrs))
        )
        result.append(Layer(name, rel_path, deps[name], tuple(releases[n] for n in order), plain))
    return result


def _values_maps(hrs: dict[str, dict[str, Any]]) -> set[str]:
    return {
        ref.get("name", "")
        for hr in hrs.values()
        for ref in (hr.get("spec") or {}).get("valuesFrom") or []
    }


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


def flux_components(env: str) -> list[Component]:
    """Flux's install order for `env`: layers by Kustomization dependsOn, then releases by
    HelmRelease dependsOn inside a layer; one wave per step."""
    found: list[Component] = []
    base = 0
    for layer in layers(env):
        short = layer.name.removeprefix("platform-")
        waves: dict[str, int] = {}
        for r in layer.releases:  # already in dependsOn order
            waves[r.name] = max((waves[d] + 1 for d in r.depends_on if d in waves), default=base)
            found.append(
                Component(
                    waves[r.name],
                    short,
                    r.name,
                    r.chart,
                    "" if r.local else r.repository,
                    "" if r.local else r.version,
                    r.namespace,
                    (r.values_file,) if r.values_file else (),
                )
            )
        if layer.manifests:
            namespaces = sorted({str(m["metadata"].get("namespace", "")) for m in layer.manifests})
            ns = next((n for n in namespaces if n), "")
            found.append(Component(base, short, layer.path, "", "", "", ns, ()))
            waves[layer.path] = base
        base = max(waves.values(), default=base - 1) + 1
    return found


def argocd_components(env: str) -> list[Component]:
    """Argo CD's install order for `env`: the sync waves of the generated Applications."""
    found = []
    for app in argocd.applications(env):
        repo = app.repository
        if app.chart and not app.chart.startswith("./") and "://" not in repo:
            repo = f"oci://{repo}/{app.chart}"  # Helm OCI repository + chart name
        ours = app.path is not None
        key = app.component if app.chart else str(app.path)
        found.append(
            Component(
                app.wave,
                app.layer,
                key,
                app.chart,
                "" if ours else repo,
                "" if ours else app.version,
                app.namespace,
                app.value_files,
            )
        )
    return found


def differences(env: str) -> list[str]:
    """Where Flux and Argo CD disagree for `env` (components, versions, order, values)."""
    flux = {c.key: c for c in flux_components(env)}
    argo = {c.key: c for c in argocd_components(env)}
    out = [f"{env}: {k}: only Flux installs it" for k in flux.keys() - argo.keys()]
    out += [f"{env}: {k}: only Argo CD installs it" for k in argo.keys() - flux.keys()]
    for key in sorted(flux.keys() & argo.keys()):
        if flux[key] != argo[key]:
            out.append(f"{env}: {key}: Flux {flux[key]} != Argo CD {argo[key]}")
    return sorted(out)


def describe(env: str) -> str:
    """Both tools' install plan for `env`, one line per component, in order."""
    flux, argo = flux_components(env), {c.key: c for c in argocd_components(env)}
    head = f"  {'wave':<5}{'layer':<12}{'component':<38}{'chart':<28}{'version':<10} tools"
    lines = [f"{env}:", head]
    for c in sorted(flux, key=lambda c: c.wave):
        same = "Flux + Argo CD" if argo.get(c.key) == c else "Flux only, or DIFFERENT"
        chart = c.chart or "(kustomize)"
        version = c.version or "git"
        lines.append(f"  {c.wave:<5}{c.layer:<12}{c.key:<38}{chart:<28}{version:<10} {same}")
    apps = argocd.applications(env)
    sync = "automated, wave by wave" if all(a.automated for a in apps) else "manual (gated)"
    lines.append(f"  Flux: Kustomizations in dependsOn order; Argo CD sync: {sync}")
    lines += [f"  ! {d}" for d in differences(env)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Platform layers and components per environment.")
    parser.add_argument("--env", action="append", help="environment (default: all)")
    args = parser.parse_args(argv)
    try:
        for env in args.env or render.environment_names():
            print(describe(env))
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
