"""Reading what Flux did (kserve_gitops.delivery.reconciliation): the Ready timeline, the
dependsOn order check and the layers' namespaces from their inventories."""

from __future__ import annotations

from typing import Any

from kserve_gitops.delivery import reconciliation


def _obj(kind: str, name: str, status: str, deps: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"dependsOn": [{"name": d} for d in deps]},
        "status": {"conditions": [{"type": "Ready", "status": status, "message": f"{name} m"}]},
    }


def test_timeline_records_changes_and_the_first_ready_time() -> None:
    lines: list[str] = []
    tl = reconciliation.Timeline(lines.append)
    tl.observe([_obj("Kustomization", "a", "False")])
    tl.observe([_obj("Kustomization", "a", "False")])  # no change, no line
    tl.observe([_obj("Kustomization", "a", "True"), _obj("HelmRelease", "h", "Unknown")])
    tl.observe([_obj("Kustomization", "a", "False")])
    tl.observe([_obj("Kustomization", "a", "True")])
    assert len(lines) == 5
    assert [n for n, _ in tl.order()] == ["Kustomization/a"]
    assert tl.pending() == ["HelmRelease/h"]
    first = tl.ready_at["Kustomization/a"]
    assert first <= tl.ready_at["Kustomization/a"]  # kept: the first time, not the last


def test_order_violations_name_the_object_and_its_dependency() -> None:
    objects = {
        "Kustomization/crds": _obj("Kustomization", "crds", "True"),
        "Kustomization/ctrl": _obj("Kustomization", "ctrl", "True", ("crds",)),
        "Kustomization/cfg": _obj("Kustomization", "cfg", "True", ("ctrl",)),
    }
    ok = {"Kustomization/crds": 1.0, "Kustomization/ctrl": 2.0, "Kustomization/cfg": 3.0}
    assert reconciliation.order_violations(objects, ok) == []
    bad = {**ok, "Kustomization/ctrl": 4.0}
    assert reconciliation.order_violations(objects, bad) == [
        "Kustomization/cfg Ready at 3.0s, before its dependency Kustomization/ctrl (4.0s)"
    ]
    missing = {"Kustomization/ctrl": 2.0}
    assert (
        "its dependency Kustomization/crds never"
        in reconciliation.order_violations(objects, missing)[0]
    )


def test_layer_namespaces_come_from_the_inventory_and_the_releases() -> None:
    def entry(ns: str, name: str, group: str, kind: str) -> dict[str, str]:
        return {"id": f"{ns}_{name}_{group}_{kind}", "v": "v1"}

    ks = _obj("Kustomization", "platform-controllers", "True")
    ks["status"]["inventory"] = {
        "entries": [
            entry("", "istio-system", "", "Namespace"),
            entry("flux-system", "istiod", "helm.toolkit.fluxcd.io", "HelmRelease"),
            entry("flux-system", "istiod-values", "", "ConfigMap"),
        ]
    }
    hr = _obj("HelmRelease", "istiod", "True")
    hr["spec"]["targetNamespace"] = "istio-mesh"
    got = reconciliation.layer_namespaces(
        {"Kustomization/platform-controllers": ks, "HelmRelease/istiod": hr}
    )
    assert got == {
        "flux-system": ["flux-system"],
        "platform-controllers": ["istio-mesh", "istio-system"],
    }
    assert reconciliation.inventory(ks)[1] == (
        "flux-system",
        "istiod",
        "helm.toolkit.fluxcd.io",
        "HelmRelease",
    )
