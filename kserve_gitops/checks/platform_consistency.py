"""`kgops platform`: what Flux and Argo CD install per environment, and (`--check`) whether the
pin file, both tools and the environments agree: the same components at the pinned versions, in
an order that respects the constraints below, with values our chart accepts.

    kgops platform --env dev     # layers and components of dev
    kgops platform --check       # every environment; exit 1 on a disagreement
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kserve_gitops.repo import Repo, argocd, flux, render
from kserve_gitops.repo.install_plan import (
    Component,
    argocd_components,
    describe,
    differences,
    flux_components,
)
from kserve_gitops.repo.render import RenderError

# The steps each platform component must come after: a missing dependsOn or sync wave shows up
# as a violated constraint. Every component named here is one every environment installs.
MUST_FOLLOW: dict[str, tuple[str, ...]] = {
    "istio-base": (),
    "kserve-crd": (),
    "cert-manager": (),
    "knative-operator": (),
    "istio-cni": (),
    "istiod": ("istio-base",),
    "istio-ingressgateway": ("istiod",),
    "ztunnel": ("istiod",),  # its workload certificates come from istiod
    # The configs layer puts the model and Knative namespaces in ambient mode: the node agents
    # must run first, or pods start outside the mesh and STRICT mTLS refuses their callers.
    "configs": ("knative-operator", "istio-ingressgateway", "istio-cni", "ztunnel"),
    "kserve-resources": ("kserve-crd", "cert-manager", "configs"),
    "kserve-runtime-configs": ("kserve-resources",),
    # Its monitors live in the namespaces of the platform components (kserve last).
    "monitoring": ("kserve-resources", "configs"),
}
# Every model (an InferenceService of our chart) needs its serving runtime.
MODEL_FOLLOWS = ("kserve-runtime-configs",)


def models(repo: Repo, env: str) -> list[str]:
    """The models `env` serves: one chart values file each under environments/<env>/models/."""
    return [p.stem for p in render.model_values_files(repo, env)]


def expected_order(repo: Repo, env: str) -> dict[str, tuple[str, ...]]:
    """Every component `env` must install -> the components it must come after."""
    return MUST_FOLLOW | dict.fromkeys(models(repo, env), MODEL_FOLLOWS)


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
        # Each Istio chart is its own OCI artifact (oci://ghcr.io/istio/release/charts/<chart>).
        out[release] = (chart, f"{istio['repository']}/{chart}", str(istio["version"]))
    out["knative-operator"] = (kn["chart"], kn["repository"], f"v{kn['operator']}")
    for chart in ks["charts"]:
        out[chart] = (chart, f"{ks['repository']}/{chart}", ks["version"])
    return out


def _check_plan(repo: Repo, env: str, tool: str, plan: list[Component], pins: dict) -> list[str]:
    out = []
    order = expected_order(repo, env)
    names = sorted(c.name for c in plan)
    if names != sorted(order):
        out.append(f"{env}: {tool} installs {names}, expected {sorted(order)}")
    wave = {c.name: c.wave for c in plan}
    for name, befores in order.items():
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
            if not (repo.root / f).is_file():
                out.append(f"{env}: {tool}: {c.key}: values file {f} does not exist")
        if c.chart.startswith("./") and not (repo.root / c.chart / "Chart.yaml").is_file():
            out.append(f"{env}: {tool}: {c.key}: chart {c.chart} does not exist")
        if not c.chart and not (repo.root / c.key / "kustomization.yaml").is_file():
            out.append(f"{env}: {tool}: path {c.key} has no kustomization.yaml")
    return out


def _check_environment(repo: Repo, env: str) -> list[str]:
    """The environment's metadata, Knative and KServe agree (domain, namespace, sync mode)."""
    meta = render.environment(repo, env)
    versions = repo.versions
    out = []
    layers = flux.layers(repo, env)
    serving = [m for lay in layers for m in lay.manifests if m.get("kind") == "KnativeServing"]
    releases = {r.name: r for lay in layers for r in lay.releases}
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
    for model in (r for r in releases.values() if r.local):
        if model.namespace != meta["namespace"]:
            out.append(
                f"{env}: {model.name} targetNamespace {model.namespace} != {meta['namespace']}"
            )
    apps = argocd.applications(repo, env)
    manual = [a.name for a in apps if not a.automated]
    if meta["sync"] == "automated" and manual:
        out.append(f"{env}: environment sync is automated but Argo CD syncs {manual} by hand")
    if meta["sync"] == "manual" and len(manual) != len(apps):
        out.append(f"{env}: environment sync is manual but some Argo CD Applications auto-sync")
    return out


def _check_model_values(repo: Repo, env: str) -> list[str]:
    """Our chart's values, as each tool passes them, pass the chart's values.schema.json."""
    import helm_python as helm

    sets = [
        (f"Flux HelmRelease/{r.name}", r.values)
        for lay in flux.layers(repo, env)
        for r in lay.releases
        if r.local
    ]
    for app in argocd.applications(repo, env):
        if app.chart.startswith("./"):
            merged: dict[str, Any] = {}
            for f in app.value_files:
                if (repo.root / f).is_file():
                    merged.update(render.load_yaml_file(repo, repo.root / f) or {})
            sets.append((f"Argo CD Application/{app.name}", merged))
    out = []
    with helm.Chart.load(repo.model_chart) as chart:
        for where, values in sets:
            try:
                chart.validate_schema(values)
            except helm.HelmError as exc:
                out.append(f"{env}: {where}: values: {exc}")
    return out


def problems(repo: Repo, envs: list[str] | tuple[str, ...]) -> list[str]:
    """Every disagreement between the pin file, Flux, Argo CD and the environments."""
    pins = pinned(repo.versions)
    out: list[str] = []
    for env in envs:
        try:
            out += _check_plan(repo, env, "Flux", flux_components(repo, env), pins)
            out += _check_plan(repo, env, "Argo CD", argocd_components(repo, env), pins)
            out += differences(repo, env)
            out += _check_environment(repo, env)
            out += _check_model_values(repo, env)
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
    repo = repo or Repo.discover()
    envs = args.env or repo.environment_names
    if args.check:
        found = problems(repo, envs)
        for p in found:
            print(f"error: {p}", file=sys.stderr)
        print(f"{len(found)} problem(s) in {', '.join(envs)}")
        return 1 if found else 0
    try:
        for env in envs:
            print(describe(repo, env))
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
