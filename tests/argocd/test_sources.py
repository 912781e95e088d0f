"""The health-check cache: the pinned bytes of config/argocd-health.tsv only, from
ARGOCD_HEALTH_DIR or the pinned URL, and a version's folder whole or absent."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from kserve_gitops.argocd import sources
from kserve_gitops.repo import Repo
from tests import REPO


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the pinned files as ARGOCD_HEALTH_DIR, for a test to break."""
    folder, tag = tmp_path / "src", sources.version(REPO)
    shutil.copytree(Path(os.environ["ARGOCD_HEALTH_DIR"]) / tag, folder / tag)
    monkeypatch.setenv("ARGOCD_HEALTH_DIR", str(folder))
    return folder


def test_pins_are_the_health_checks_of_the_pinned_version() -> None:
    pins = sources.pins(REPO)
    tag = REPO.versions["argocd"]["version"]
    assert {p.tag for p in pins} == {tag}
    checks = {p.file.rsplit("/", 1)[0] for p in pins if p.file.endswith("/health.lua")}
    assert checks == {
        f"{tag}/serving.kserve.io/InferenceService",
        f"{tag}/serving.knative.dev/Service",
        f"{tag}/helm.toolkit.fluxcd.io/HelmRelease",
        f"{tag}/kustomize.toolkit.fluxcd.io/Kustomization",
    }
    for pin in pins:
        path = pin.file.removeprefix(f"{tag}/")
        assert pin.url.endswith(f"/argo-cd/{tag}/resource_customizations/{path}"), pin.url


def test_fills_the_cache_from_the_folder(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    got = sources.ensure(REPO, cache)
    assert got == cache / sources.version(REPO)
    assert len([p for p in got.rglob("*") if p.is_file()]) == len(sources.pins(REPO))
    assert sorted(p.name for p in cache.iterdir()) == [got.name]  # no staging left behind
    assert sources.ensure(REPO, cache) == got  # verified, not fetched again


def test_a_wrong_sha256_names_file_column_and_expected_and_writes_nothing(
    source: Path, tmp_path: Path
) -> None:
    pin = next(p for p in sources.pins(REPO) if p.file.endswith("InferenceService/health.lua"))
    (source / pin.file).write_text('return {status = "Healthy"}\n')
    cache = tmp_path / "cache"
    expected = (
        f"sha256 mismatch for {pin.file}: config/argocd-health.tsv column sha256 expects "
        f"{pin.sha256}, got "
    )
    with pytest.raises(sources.HealthSourceError, match=re.escape(expected)):
        sources.ensure(REPO, cache)
    assert not cache.exists()


def test_a_missing_file_is_an_error_and_writes_nothing(source: Path, tmp_path: Path) -> None:
    pin = next(p for p in sources.pins(REPO) if p.file.endswith("Service/health_test.yaml"))
    (source / pin.file).unlink()
    cache = tmp_path / "cache"
    with pytest.raises(
        sources.HealthSourceError, match=re.escape(f"cannot read {pin.file} from ARGOCD_HEALTH_DIR")
    ):
        sources.ensure(REPO, cache)
    assert not cache.exists()


def test_a_tampered_cache_is_detected(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = sources.ensure(REPO, cache)
    (folder / "serving.knative.dev/Service/health.lua").write_text("return {}\n")
    with pytest.raises(sources.HealthSourceError, match=r"sha256 mismatch for .*Service/health"):
        sources.ensure(REPO, cache)
    (folder / "serving.knative.dev/Service/health.lua").unlink()
    with pytest.raises(sources.HealthSourceError, match="missing from the cache"):
        sources.ensure(REPO, cache)


def test_a_pin_at_another_version_than_versions_yaml_fails(repo_copy: Path) -> None:
    pin_file = repo_copy / "versions.yaml"
    pin_file.write_text(pin_file.read_text().replace("version: v3.5.1", "version: v3.5.2"))
    with pytest.raises(sources.HealthSourceError, match=r"argocd\.version is v3\.5\.2"):
        sources.pins(Repo(repo_copy))
