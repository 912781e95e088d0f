"""The Flux e2e's offline parts: the local-source overlay (checked by doing what kustomize and
kustomize-controller do with it), the Ready timeline and the dependsOn order check, the build
module of a Flux controller and the pinned Flux distribution."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kserve_gitops.delivery import flux
from kserve_gitops.localcluster import binaries, controlplane
from kserve_gitops.localcluster.controlplane import PORTS
from kserve_gitops.repo import flux as repo_flux
from kserve_gitops.repo import render
from kserve_gitops.upstream import crds
from tests import REPO

GIT = "http://127.0.0.1:24490/kserve-gitops.git"
CHARTS = "http://127.0.0.1:24491"
REGISTRY = "127.0.0.1:24492"


def _build(dest: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(Path(shutil.which("kubectl") or "kubectl")), "kustomize", str(dest)],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(yaml.safe_load_all(out.stdout))


@pytest.fixture(scope="module")
def dev_overlay(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[flux.Source]]:
    srcs = flux.chart_sources(REPO, "dev")
    dest = tmp_path_factory.mktemp("overlay")
    return flux.overlay(REPO, "dev", dest, GIT, srcs, CHARTS, REGISTRY, interval="15s"), srcs


def test_chart_sources_are_every_helm_and_oci_repository_of_the_layers() -> None:
    srcs = flux.chart_sources(REPO, "dev")
    kinds = {(s.kind, s.name) for s in srcs}
    assert ("OCIRepository", "kserve-crd") in kinds
    assert ("OCIRepository", "istiod") in kinds  # Istio's charts: one OCI artifact each
    assert ("HelmRepository", "jetstack") in kinds
    layers = {lay.name for lay in repo_flux.layers(REPO, "dev")}
    assert {s.layer for s in srcs} <= layers


def test_overlay_points_the_git_repository_at_the_local_server(
    dev_overlay: tuple[Path, list[flux.Source]],
) -> None:
    dest, _ = dev_overlay
    objs = _build(dest)
    original = flux.entry_objects(REPO, "dev")
    assert sorted(flux.key(o) for o in objs) == sorted(flux.key(o) for o in original)
    repo = next(o for o in objs if o["kind"] == "GitRepository")
    assert repo["spec"]["url"] == GIT
    assert repo["spec"]["interval"] == "15s"
    assert repo["spec"]["ref"] == {"branch": "main"}
    for ks in (o for o in objs if o["kind"] == "Kustomization"):
        assert ks["spec"]["interval"] == "15s"
        before = next(o for o in original if flux.key(o) == flux.key(ks))
        # Everything else is the manifests' own: dependsOn, wait, prune, path.
        for field in ("dependsOn", "wait", "prune", "path", "sourceRef"):
            assert ks["spec"].get(field) == before["spec"].get(field), (flux.key(ks), field)


def test_flux_patches_rewrite_every_chart_source_of_the_layer(
    dev_overlay: tuple[Path, list[flux.Source]], tmp_path: Path
) -> None:
    """What kustomize-controller does with spec.patches, done with kustomize: every chart
    source the layer applies ends up at a local server and the HelmReleases lose their health
    expressions (kwok runs no KServe controller); nothing else changes."""
    dest, srcs = dev_overlay
    patched = stripped = 0
    for ks in (o for o in _build(dest) if o["kind"] == "Kustomization"):
        layer_dir = REPO.root / ks["spec"]["path"].removeprefix("./")
        work = tmp_path / ks["metadata"]["name"]
        work.mkdir()
        (work / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "resources": [os.path.relpath(layer_dir, work)],
                    "patches": ks["spec"].get("patches", []),
                }
            )
        )
        got = _build(work)
        want = render.kustomize_build(REPO, layer_dir)
        assert len(got) == len(want)
        stripped += sum("healthCheckExprs" in o["spec"] for o in want if o["kind"] == "HelmRelease")
        for obj in got:
            if obj["kind"] == "HelmRelease":  # kwok sets no InferenceService status
                assert "healthCheckExprs" not in obj["spec"], flux.key(obj)
            if obj["kind"] == "OCIRepository":
                assert obj["spec"]["url"].startswith(f"oci://{REGISTRY}/"), flux.key(obj)
                assert obj["spec"]["insecure"] is True
                patched += 1
            elif obj["kind"] == "HelmRepository":
                assert obj["spec"]["url"] == f"{CHARTS}/{obj['metadata']['name']}"
                patched += 1
    assert patched == len(srcs)
    assert stripped >= 1  # the models layer declares them


def test_local_url_keeps_the_oci_path() -> None:
    src = flux.Source(
        "platform-crds", "OCIRepository", "x", "oci://ghcr.io/kserve/charts/kserve-crd"
    )
    assert flux.local_url(src, CHARTS, REGISTRY) == f"oci://{REGISTRY}/kserve/charts/kserve-crd"


def _obj(kind: str, name: str, status: str, deps: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"dependsOn": [{"name": d} for d in deps]},
        "status": {"conditions": [{"type": "Ready", "status": status, "message": f"{name} m"}]},
    }


def test_timeline_records_changes_and_the_first_ready_time() -> None:
    lines: list[str] = []
    tl = flux.Timeline(lines.append)
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
    assert flux.order_violations(objects, ok) == []
    bad = {**ok, "Kustomization/ctrl": 4.0}
    assert flux.order_violations(objects, bad) == [
        "Kustomization/cfg Ready at 3.0s, before its dependency Kustomization/ctrl (4.0s)"
    ]
    missing = {"Kustomization/ctrl": 2.0}
    assert "its dependency Kustomization/crds never" in flux.order_violations(objects, missing)[0]


def test_ports_stay_in_range_and_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cluster's own ports, as allocated when nothing else holds them."""
    monkeypatch.setattr(flux, "port_in_use", lambda port: False)
    used: list[int] = []
    for name in (*(f"flux-{e}" for e in REPO.environment_names), "flux-behaviour"):
        p = flux.Ports.allocate(REPO, name)
        used += [p.git, p.charts, p.registry, p.storage, *p.health.values()]
        # The control plane adds 10 * its slot of the name to the base.
        first = flux.cluster_port_base(REPO, name) + 10 * controlplane.slot(REPO, name)
        used += [first + offset for offset in PORTS.values()]
    assert len(used) == len(set(used))
    assert all(flux.CLUSTER_PORTS <= port < flux.CLUSTER_PORTS + 500 for port in used)


def test_ports_in_use_are_skipped() -> None:
    with socket.socket() as sock:
        first = flux.Ports.allocate(REPO, "flux-behaviour")
        # A port an earlier test's server left in TIME_WAIT is free to listen on again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", first.git))
        sock.listen()
        again = flux.Ports.allocate(REPO, "flux-behaviour")
    assert first.git not in (again.git, again.charts, again.registry, again.storage)
    assert first.git not in again.health.values()


def test_cluster_ports_move_past_a_port_in_use() -> None:
    base = flux.cluster_port_base(REPO, "flux-behaviour")
    first = base + 10 * controlplane.slot(REPO, "flux-behaviour")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", first + PORTS["kube-apiserver"]))
        sock.listen()
        moved = flux.cluster_port_base(REPO, "flux-behaviour") + 10 * controlplane.slot(
            REPO, "flux-behaviour"
        )
    taken = first + PORTS["kube-apiserver"]
    assert taken not in [moved + offset for offset in PORTS.values()]
    assert moved >= flux.CLUSTER_PORTS
    assert moved + max(PORTS.values()) < flux.SERVER_PORTS


def test_flux_pins_are_one_distribution_and_match_the_crd_pins() -> None:
    versions = REPO.versions
    pinned = {b.name: b.version for b in binaries.flux_pinned(REPO, versions)}
    assert set(pinned) == set(binaries.FLUX_CONTROLLERS)
    tags = {
        p.upstream.split("/")[1]: p.tag for p in crds.pins(REPO) if p.upstream.startswith("fluxcd/")
    }
    assert tags == {c: pinned[c] for c in tags}, "config/crds.tsv pins other Flux versions"


def test_flux_pins_missing_version_is_named() -> None:
    versions = REPO.versions
    broken = {
        **versions,
        "flux": {k: v for k, v in versions["flux"].items() if k != "helmController"},
    }
    with pytest.raises(
        binaries.BuildError, match=r"versions.yaml: flux.helmController: no version"
    ):
        binaries.flux_pinned(REPO, broken)


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
    got = flux.layer_namespaces(
        {"Kustomization/platform-controllers": ks, "HelmRelease/istiod": hr}
    )
    assert got == {
        "flux-system": ["flux-system"],
        "platform-controllers": ["istio-mesh", "istio-system"],
    }
    assert flux.inventory(ks)[1] == (
        "flux-system",
        "istiod",
        "helm.toolkit.fluxcd.io",
        "HelmRelease",
    )
