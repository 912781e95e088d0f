"""Drift the GitOps way: the fields our manifests set that a controller rewrites are declared
(Flux `driftDetection.ignore`, Argo CD `ignoreDifferences`), and no other field is.

Both tools detect drift with a dry-run server-side apply (Flux: fluxcd/pkg/ssa jsondiff; Argo CD:
`ServerSideDiff=true`), so a field our manifests leave out (a caBundle cert-manager injects,
replicas an HPA sets) never shows as drift. What remains are fields we render that a controller
changes afterwards; the rules below name them, from the upstream projects' behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kserve_gitops.repo import argocd, flux, render
from kserve_gitops.upstream import charts
from tests import REPO

ENVS = REPO.environment_names
Field = tuple[str, str, str]  # kind, name, JSON pointer


def _controller_owned(objs: list[dict[str, Any]]) -> set[Field]:
    """Fields of these rendered objects that a controller or webhook owns once applied."""
    hpa_targets = {
        (o["spec"]["scaleTargetRef"]["kind"], o["spec"]["scaleTargetRef"]["name"])
        for o in objs
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    owned: set[Field] = set()
    for o in objs:
        kind, name = o["kind"], o["metadata"]["name"]
        if (kind, name) in hpa_targets:
            owned.add((kind, name, "/spec/replicas"))
        if kind == "ClusterRole" and "aggregationRule" in o:
            owned.add((kind, name, "/rules"))  # Kubernetes' aggregation controller fills them
        for i, hook in enumerate(o.get("webhooks") or []):
            # istiod switches its validators from Ignore to Fail once its webhook answers.
            if (
                kind == "ValidatingWebhookConfiguration"
                and (o["metadata"].get("labels") or {}).get("app") == "istiod"
            ):
                owned.add((kind, name, f"/webhooks/{i}/failurePolicy"))
            if "caBundle" in (hook.get("clientConfig") or {}):
                owned.add((kind, name, f"/webhooks/{i}/clientConfig/caBundle"))
        conversion = ((o.get("spec") or {}).get("conversion") or {}).get("webhook") or {}
        if kind == "CustomResourceDefinition" and "caBundle" in (
            conversion.get("clientConfig") or {}
        ):
            owned.add((kind, name, "/spec/conversion/webhook/clientConfig/caBundle"))
    return owned


def _rendered(body: dict[str, Any], pointer: str) -> bool:
    node: Any = body
    for part in pointer.strip("/").split("/"):
        key: Any = int(part) if isinstance(node, list) else part.replace("~1", "/")
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def _helmreleases(env: str) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o
        for layer in flux.layers(REPO, env)
        for o in render.kustomize_build(REPO, REPO.root / layer.path)
        if o["kind"] == "HelmRelease"
    }


@pytest.fixture(scope="module")
def owned(shared_charts: Path) -> dict[str, tuple[set[Field], set[Field]]]:
    """Per release, over every environment: (controller-owned fields, those our manifests set)."""
    out: dict[str, tuple[set[Field], set[Field]]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHART_DIR", str(shared_charts))
        for env in ENVS:
            for layer in flux.layers(REPO, env):
                for r in layer.releases:
                    ref = charts.ChartRef(r.chart, r.version, r.repository)
                    chart = (
                        REPO.root / r.chart if r.local else charts.ensure(REPO, ref, online=False)
                    )
                    objs = [
                        o.body
                        for o in render.render_chart(
                            REPO, chart, r.values, r.name, r.namespace, env
                        )
                    ]
                    fields = _controller_owned(objs)
                    bodies = {(o["kind"], o["metadata"]["name"]): o for o in objs}
                    set_by_us = {f for f in fields if _rendered(bodies[f[:2]], f[2])}
                    all_f, ours = out.setdefault(r.name, (set(), set()))
                    all_f |= fields
                    ours |= set_by_us
    return out


def test_every_helmrelease_corrects_drift() -> None:
    for env in ENVS:
        for name, hr in _helmreleases(env).items():
            assert hr["spec"]["driftDetection"]["mode"] == "enabled", f"{env}: {name}"


def test_flux_ignores_exactly_the_fields_controllers_own(
    owned: dict[str, tuple[set[Field], set[Field]]],
) -> None:
    assert ("Deployment", "istiod", "/spec/replicas") in owned["istiod"][0]  # prod's HPA
    for env in ENVS:
        for name, hr in _helmreleases(env).items():
            declared = {
                (rule["target"]["kind"], rule["target"]["name"], path)
                for rule in hr["spec"]["driftDetection"].get("ignore") or []
                for path in rule["paths"]
            }
            assert declared == owned[name][0], f"{env}: HelmRelease {name}"


def test_argo_cd_diffs_server_side_and_ignores_only_fields_we_render(
    owned: dict[str, tuple[set[Field], set[Field]]],
) -> None:
    for env in ENVS:
        for app in argocd.generated(REPO, env):
            meta = app["metadata"]
            options = meta["annotations"]["argocd.argoproj.io/compare-options"].split(",")
            assert {"ServerSideDiff=true", "IncludeMutationWebhook=true"} <= set(options)
            declared = {
                (d["kind"], d["name"], p)
                for d in app["spec"].get("ignoreDifferences") or []
                for p in d["jsonPointers"]
            }
            component = meta["labels"]["kserve-gitops/component"]
            expected = owned[component][1] if component in owned else set()
            assert declared == expected, f"{env}: Application {meta['name']}"
    # The HPA sets istiod's replicas only where the chart leaves them out: nothing for Argo CD.
    assert ("Deployment", "istiod", "/spec/replicas") not in owned["istiod"][1]


def test_kserve_defaulting_takes_part_in_the_dry_run(shared_charts: Path) -> None:
    """No rule for the fields KServe's webhook defaults: both tools' dry-run applies go through
    it, which the API server allows only for a webhook without side effects."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHART_DIR", str(shared_charts))
        release = next(
            r
            for layer in flux.layers(REPO, "prod")
            for r in layer.releases
            if r.name == "kserve-resources"
        )
        ref = charts.ChartRef(release.chart, release.version, release.repository)
        objs = render.render_chart(
            REPO,
            charts.ensure(REPO, ref, online=False),
            release.values,
            release.name,
            release.namespace,
            "t",
        )
    hooks = [
        h
        for o in objs
        if o.kind == "MutatingWebhookConfiguration"
        for h in o.body["webhooks"]
        if any("inferenceservices" in rule["resources"] for rule in h["rules"])
    ]
    assert hooks and all(h["sideEffects"] in ("None", "NoneOnDryRun") for h in hooks)
