"""The Flux e2e's local-source overlay (kserve_gitops.delivery.overlay), checked by doing what
kustomize and kustomize-controller do with it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kserve_gitops.delivery import overlay
from kserve_gitops.delivery.reconciliation import key
from kserve_gitops.repo import flux as repo_flux
from kserve_gitops.repo import render
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
def dev_overlay(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[overlay.Source]]:
    srcs = overlay.chart_sources(REPO, "dev")
    dest = tmp_path_factory.mktemp("overlay")
    return overlay.overlay(REPO, "dev", dest, GIT, srcs, CHARTS, REGISTRY, interval="15s"), srcs


def test_chart_sources_are_every_helm_and_oci_repository_of_the_layers() -> None:
    srcs = overlay.chart_sources(REPO, "dev")
    kinds = {(s.kind, s.name) for s in srcs}
    assert ("OCIRepository", "kserve-crd") in kinds
    assert ("OCIRepository", "istiod") in kinds  # Istio's charts: one OCI artifact each
    assert ("HelmRepository", "jetstack") in kinds
    layers = {lay.name for lay in repo_flux.layers(REPO, "dev")}
    assert {s.layer for s in srcs} <= layers


def test_overlay_points_the_git_repository_at_the_local_server(
    dev_overlay: tuple[Path, list[overlay.Source]],
) -> None:
    dest, _ = dev_overlay
    objs = _build(dest)
    original = overlay.entry_objects(REPO, "dev")
    assert sorted(key(o) for o in objs) == sorted(key(o) for o in original)
    repo = next(o for o in objs if o["kind"] == "GitRepository")
    assert repo["spec"]["url"] == GIT
    assert repo["spec"]["interval"] == "15s"
    assert repo["spec"]["ref"] == {"branch": "main"}
    for ks in (o for o in objs if o["kind"] == "Kustomization"):
        assert ks["spec"]["interval"] == "15s"
        before = next(o for o in original if key(o) == key(ks))
        # Everything else is the manifests' own: dependsOn, wait, prune, path.
        for field in ("dependsOn", "wait", "prune", "path", "sourceRef"):
            assert ks["spec"].get(field) == before["spec"].get(field), (key(ks), field)


def test_flux_patches_rewrite_every_chart_source_of_the_layer(
    dev_overlay: tuple[Path, list[overlay.Source]], tmp_path: Path
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
                assert "healthCheckExprs" not in obj["spec"], key(obj)
            if obj["kind"] == "OCIRepository":
                assert obj["spec"]["url"].startswith(f"oci://{REGISTRY}/"), key(obj)
                assert obj["spec"]["insecure"] is True
                patched += 1
            elif obj["kind"] == "HelmRepository":
                assert obj["spec"]["url"] == f"{CHARTS}/{obj['metadata']['name']}"
                patched += 1
    assert patched == len(srcs)
    assert stripped >= 1  # the models layer declares them


def test_local_url_keeps_the_oci_path() -> None:
    src = overlay.Source(
        "platform-crds", "OCIRepository", "x", "oci://ghcr.io/kserve/charts/kserve-crd"
    )
    assert overlay.local_url(src, CHARTS, REGISTRY) == f"oci://{REGISTRY}/kserve/charts/kserve-crd"
