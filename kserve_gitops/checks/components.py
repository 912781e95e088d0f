"""The platform each environment declares, read back from its Flux manifests.

`layers(env)` kustomize-builds `clusters/<env>` (the Flux entry point), follows the
Kustomizations in `dependsOn` order and, for each layer, returns the Helm releases it
declares (chart, repository, version, values, target namespace) and the plain manifests it
applies. The e2e installs exactly that with the helm CLI, and the GitOps consistency tests
compare it with the Argo CD declaration and with versions.yaml.

    kgops platform --env dev     # layers and components of dev
    kgops platform               # every environment
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kserve_gitops.checks import argocd
from kserve_gitops.repo import Repo, paths, render
from kserve_gitops.repo.render import RenderError

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
    # Every values file, in the order Flux merges them (values_file is the last).
    values_files: tuple[str, ...] = ()

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
        for values_file in self.values_files:
            argv += ["-f", str(paths.ROOT / values_file)]
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
    repo = Repo.discover()  # until the caller passes its Repo
    path = path or paths.VERSIONS
    data = render.load_yaml_file(repo, path)
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
    """configMapGenerator name -> the file it reads (relative to ROOT), in this kustomization
    and the directories it takes as resources (platform/<layer>: values every environment
    shares)."""
    repo = Repo.discover()  # until the caller passes its Repo
    kfile = kustomization_dir / "kustomization.yaml"
    data = render.load_yaml_file(repo, kfile) if kfile.is_file() else None
    found: dict[str, str] = {}
    for res in (data or {}).get("resources") or []:
        if (kustomization_dir / str(res)).is_dir():
            found |= _generated_files((kustomization_dir / str(res)).resolve())
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
    values_files: list[str] = []
    for ref in spec.get("valuesFrom") or []:
        cm = config_maps.get(ref.get("name", ""))
        if ref.get("kind") == "ConfigMap" and cm is None and ref.get("optional"):
            continue  # Flux skips an optional ConfigMap that does not exist
        if ref.get("kind") != "ConfigMap" or cm is None:
            raise RenderError(f"{here}: spec.valuesFrom: no ConfigMap {ref.get('name')!r}")
        text = (cm.get("data") or {}).get(ref.get("valuesKey", "values.yaml"))
        if text is None:
            raise RenderError(f"{here}: ConfigMap {ref['name']} has no key values.yaml")
        # kustomize names a generated ConfigMap <generator name>-<content hash>.
        values_file = next(
            (f for gen, f in generated.items() if ref["name"] in (gen, *_hashed(gen, ref))), None
        )
        values_files += [values_file] if values_file else []
        origin = f"{here}: valuesFrom ConfigMap {ref['name']} ({values_file or 'inline'})"
        values.update(render.load_yaml_documents(text, origin)[0] if text.strip() else {})
    values.update(spec.get("values") or {})
    return Release(
        name=str(spec.get("releaseName", name)),
        namespace=str(spec.get("targetNamespace", hr["metadata"].get("namespace", "default"))),
        chart=chart,
        repository=repository,
        version=version,
        values=values,
        values_file=values_files[-1] if values_files else None,
        depends_on=tuple(d["name"] for d in spec.get("dependsOn") or []),
        values_files=tuple(values_files),
    )


def layers(env: str) -> list[Layer]:
    """The layers Flux applies for `env`, in dependsOn order."""
    repo = Repo.discover()  # until the caller passes its Repo
    cluster_dir = paths.ROOT / "clusters" / env
    if not (cluster_dir / "kustomization.yaml").is_file():
        raise RenderError(f"clusters/{env}/kustomization.yaml: no Flux entry point for {env}")
    where = f"clusters/{env}"
    top = render.kustomize_build(repo, cluster_dir)
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
        objs = render.kustomize_build(repo, layer_dir)
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
    """Flux's install steps for `env`: a layer starts after the layers it dependsOn end (not
    merely after the previous one), a release after the releases it dependsOn."""
    found: list[Component] = []
    ends: dict[str, int] = {}  # layer -> its last step
    for layer in layers(env):
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
        f, a = asdict(flux[key]), asdict(argo[key])
        out += [
            f"{env}: {key}: {field_} differs: Flux {f[field_]!r}, Argo CD {a[field_]!r}"
            for field_ in f
            if f[field_] != a[field_]
        ]
    return sorted(out)


def describe(env: str) -> str:
    """Both tools' install plan for `env`, one line per component, in order."""
    flux, argo = flux_components(env), {c.key: c for c in argocd_components(env)}
    width = max(len(c.key) for c in flux) + 2
    head = f"  {'wave':<5}{'layer':<12}{'component':<{width}}{'chart':<28}{'version':<10} tools"
    lines = [f"{env}:", head]
    # Plain-manifest layers: name the custom resources they apply, a versioned one first
    # (KnativeServing 1.21.1 rather than the NetworkPolicies beside it).
    crs = {
        lay.path: next(
            (
                (m["kind"], str(m["spec"].get("version", "git")))
                for m in sorted(lay.manifests, key=lambda m: "version" not in m.get("spec", {}))
                if "spec" in m
            ),
            ("(kustomize)", "git"),
        )
        for lay in layers(env)
    }
    for c in sorted(flux, key=lambda c: c.wave):
        same = "Flux + Argo CD" if argo.get(c.key) == c else "Flux only, or DIFFERENT"
        chart, version = (c.chart, c.version or "git") if c.chart else crs[c.key]
        lines.append(f"  {c.wave:<5}{c.layer:<12}{c.key:<{width}}{chart:<28}{version:<10} {same}")
    apps = argocd.applications(env)
    sync = "automated, wave by wave" if all(a.automated for a in apps) else "manual (gated)"
    lines.append(f"  Flux: Kustomizations in dependsOn order; Argo CD sync: {sync}")
    lines += [f"  ! {d}" for d in differences(env)]
    return "\n".join(lines)


# Components every environment installs, and the steps each must come after: a missing
# dependsOn or sync wave shows up as a violated constraint.
EXPECTED_COMPONENTS = (
    "istio-base",
    "kserve-crd",
    "cert-manager",
    "istiod",
    "istio-cni",
    "ztunnel",
    "istio-ingressgateway",
    "knative-operator",
    "configs",
    "kserve-resources",
    "kserve-runtime-configs",
    "monitoring",
    "sklearn-iris",
)
MUST_FOLLOW = {
    "istiod": ("istio-base",),
    "istio-ingressgateway": ("istiod",),
    "ztunnel": ("istiod",),  # its workload certificates come from istiod
    # The configs layer puts the model and Knative namespaces in ambient mode: the node agents
    # must run first, or pods start outside the mesh and STRICT mTLS refuses their callers.
    "configs": ("knative-operator", "istio-ingressgateway", "istio-cni", "ztunnel"),
    "kserve-resources": ("kserve-crd", "cert-manager", "configs"),
    "kserve-runtime-configs": ("kserve-resources",),
    "sklearn-iris": ("kserve-runtime-configs",),
    # Its monitors live in the namespaces of the platform components (kserve last).
    "monitoring": ("kserve-resources", "configs"),
}


def pinned(versions: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Release name -> (chart, repository, version) that versions.yaml pins."""
    cm, istio, kn, ks = (versions[k] for k in ("certManager", "istio", "knative", "kserve"))
    out = {"cert-manager": (cm["chart"], cm["repository"], cm["version"])}
    for release, chart in (
        ("istio-base", "base"),
        ("istiod", "istiod"),
        ("istio-ingressgateway", "gateway"),
        ("istio-cni", "cni"),
        ("ztunnel", "ztunnel"),
    ):
        out[release] = (chart, istio["repository"], str(istio["version"]))
    out["knative-operator"] = (kn["chart"], kn["repository"], f"v{kn['operator']}")
    for chart in ks["charts"]:
        out[chart] = (chart, f"{ks['repository']}/{chart}", ks["version"])
    return out


def _name(c: Component) -> str:
    return c.layer if not c.chart else c.key


def _check_plan(env: str, tool: str, plan: list[Component], pins: dict) -> list[str]:
    out = []
    names = [_name(c) for c in plan]
    if sorted(names) != sorted(EXPECTED_COMPONENTS):
        out.append(
            f"{env}: {tool} installs {sorted(names)}, expected {sorted(EXPECTED_COMPONENTS)}"
        )
    wave = {_name(c): c.wave for c in plan}
    for name, befores in MUST_FOLLOW.items():
        for before in befores:
            if name in wave and before in wave and wave[name] <= wave[before]:
                out.append(
                    f"{env}: {tool}: {name} (step {wave[name]}) must come after {before} "
                    f"(step {wave[before]}): missing dependsOn / sync-wave step"
                )
    for c in plan:
        if c.key in pins and (c.chart, c.repository, c.version) != pins[c.key]:
            out.append(
                f"{env}: {tool}: {c.key} is {c.chart} {c.version} from {c.repository}, "
                f"versions.yaml pins {pins[c.key][0]} {pins[c.key][2]} from {pins[c.key][1]}"
            )
        for f in c.values_files:
            if not (paths.ROOT / f).is_file():
                out.append(f"{env}: {tool}: {c.key}: values file {f} does not exist")
        if c.chart.startswith("./") and not (paths.ROOT / c.chart / "Chart.yaml").is_file():
            out.append(f"{env}: {tool}: {c.key}: chart {c.chart} does not exist")
        if not c.chart and not (paths.ROOT / c.key / "kustomization.yaml").is_file():
            out.append(f"{env}: {tool}: path {c.key} has no kustomization.yaml")
    return out


def _check_environment(env: str, versions: dict[str, Any]) -> list[str]:
    """The environment's metadata, Knative and KServe agree (domain, namespace, sync mode)."""
    repo = Repo.discover()  # until the caller passes its Repo
    meta = render.environment(repo, env)
    out = []
    flux = layers(env)
    serving = [m for lay in flux for m in lay.manifests if m.get("kind") == "KnativeServing"]
    releases = {r.name: r for lay in flux for r in lay.releases}
    for ks in serving:
        spec = ks.get("spec") or {}
        if str(spec.get("version")) != str(versions["knative"]["serving"]):
            out.append(
                f"{env}: KnativeServing spec.version {spec.get('version')} != versions.yaml "
                f"knative.serving {versions['knative']['serving']}"
            )
        domains = list(((spec.get("config") or {}).get("domain") or {}).keys())
        if domains != [meta["ingressDomain"]]:
            out.append(
                f"{env}: KnativeServing spec.config.domain {domains} != [{meta['ingressDomain']}]"
            )
    if len(serving) != 1:
        out.append(f"{env}: expected one KnativeServing, found {len(serving)}")
    kserve = releases.get("kserve-resources")
    domain = ((kserve.values if kserve else {}).get("kserve") or {}).get("controller") or {}
    domain = (domain.get("gateway") or {}).get("domain")
    if domain != meta["ingressDomain"]:
        out.append(
            f"{env}: kserve-resources kserve.controller.gateway.domain {domain} "
            f"!= {meta['ingressDomain']}"
        )
    model = releases.get("sklearn-iris")
    if model and model.namespace != meta["namespace"]:
        out.append(f"{env}: sklearn-iris targetNamespace {model.namespace} != {meta['namespace']}")
    apps = argocd.applications(env)
    manual = [a.name for a in apps if not a.automated]
    if meta["sync"] == "automated" and manual:
        out.append(f"{env}: environment sync is automated but Argo CD syncs {manual} by hand")
    if meta["sync"] == "manual" and len(manual) != len(apps):
        out.append(f"{env}: environment sync is manual but some Argo CD Applications auto-sync")
    return out


def _check_model_values(env: str) -> list[str]:
    """Our chart's values, as each tool passes them, pass the chart's values.schema.json."""
    repo = Repo.discover()  # until the caller passes its Repo
    import helm_python as helm

    out = []
    sets = [
        (f"Flux HelmRelease/{r.name}", r.values)
        for lay in layers(env)
        for r in lay.releases
        if r.local
    ]
    for app in argocd.applications(env):
        if app.chart.startswith("./"):
            merged: dict[str, Any] = {}
            for f in app.value_files:
                if (paths.ROOT / f).is_file():
                    merged.update(render.load_yaml_file(repo, paths.ROOT / f) or {})
            sets.append((f"Argo CD Application/{app.name}", merged))
    with helm.Chart.load(paths.ROOT / OUR_CHART) as chart:
        for where, values in sets:
            try:
                chart.validate_schema(values)
            except helm.HelmError as exc:
                out.append(f"{env}: {where}: values: {exc}")
    return out


def problems(envs: list[str]) -> list[str]:
    """Every disagreement between the pin file, Flux, Argo CD and the environments."""
    versions = load_versions()
    pins = pinned(versions)
    out: list[str] = []
    for env in envs:
        try:
            out += _check_plan(env, "Flux", flux_components(env), pins)
            out += _check_plan(env, "Argo CD", argocd_components(env), pins)
            out += differences(env)
            out += _check_environment(env, versions)
            out += _check_model_values(env)
        except RenderError as exc:
            out.append(str(exc))
    return out


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(description="Platform layers and components per environment.")
    parser.add_argument("--env", action="append", help="environment (default: all)")
    parser.add_argument(
        "--check", action="store_true", help="check pins, order, paths and values; exit 1 if wrong"
    )
    args = parser.parse_args(argv)
    envs = args.env or repo.environment_names
    if args.check:
        found = problems(envs)
        for p in found:
            print(f"error: {p}", file=sys.stderr)
        print(f"{len(found)} problem(s) in {', '.join(envs)}")
        return 1 if found else 0
    try:
        for env in envs:
            print(describe(env))
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
