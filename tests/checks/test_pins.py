"""versions.yaml is the one pin file: Flux, Argo CD and the KnativeServing CR agree with it,
Renovate's regex manager sees every pin, and a disagreeing version fails the check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kserve_gitops.checks import install_plan, platform_consistency
from kserve_gitops.repo import flux
from tests import REPO
from tests.checks.test_gitops import check_platform


@pytest.fixture(scope="module")
def pins() -> dict[str, tuple[str, str, str]]:
    return platform_consistency.pinned(REPO.versions)


def test_pins_cover_every_chart_of_versions_yaml(pins: dict[str, tuple[str, str, str]]) -> None:
    versions = REPO.versions
    charts = {chart for chart, _repo, _version in pins.values()}
    assert set(versions["istio"]["charts"]) <= charts
    assert set(versions["kserve"]["charts"]) <= charts
    assert pins["knative-operator"][2] == f"v{versions['knative']['operator']}"
    assert pins["kserve-crd"] == ("kserve-crd", "oci://ghcr.io/kserve/charts/kserve-crd", "v0.20.0")


@pytest.mark.parametrize("env", REPO.environment_names)
@pytest.mark.parametrize("tool", ["flux", "argocd"])
def test_every_chart_is_at_its_pinned_version(
    env: str, tool: str, pins: dict[str, tuple[str, str, str]]
) -> None:
    plan = getattr(install_plan, f"{tool}_components")(REPO, env)
    upstream = [c for c in plan if c.chart and not c.chart.startswith("./")]
    assert {c.key for c in upstream} == set(pins)
    for c in upstream:
        assert (c.chart, c.repository, c.version) == pins[c.key], c.key


@pytest.mark.parametrize("env", REPO.environment_names)
def test_knative_serving_version_is_the_pinned_one(env: str) -> None:
    serving = [
        m
        for layer in flux.layers(REPO, env)
        for m in layer.manifests
        if m.get("kind") == "KnativeServing"
    ]
    assert [m["spec"]["version"] for m in serving] == [REPO.versions["knative"]["serving"]]


def _renovate_patterns() -> list[re.Pattern[str]]:
    config = json.loads((REPO.root / "renovate.json").read_text())
    managers = [m for m in config["customManagers"] if m["customType"] == "regex"]
    assert any("versions" in p for m in managers for p in m["managerFilePatterns"])
    # Renovate uses JavaScript named groups; Python spells them (?P<name>...).
    return [re.compile(s.replace("(?<", "(?P<")) for m in managers for s in m["matchStrings"]]


def test_renovate_proposes_bumps_for_every_pinned_version() -> None:
    text = (REPO.root / "versions.yaml").read_text()
    found = {
        m.group("currentValue"): m.group("datasource")
        for p in _renovate_patterns()
        for m in p.finditer(text)
    }
    versions = REPO.versions
    expected = {
        str(versions["kubernetes"]["version"]),
        versions["kubernetes"]["kind"],
        versions["certManager"]["version"],
        str(versions["istio"]["version"]),
        str(versions["knative"]["operator"]),
        str(versions["knative"]["serving"]),
        versions["kserve"]["version"],
    }
    assert expected <= set(found), f"pins without a renovate comment: {expected - set(found)}"
    local = versions["localCluster"]
    expected |= {local["etcd"], local["kwok"], local["helm"], versions["secretScan"]["gitleaks"]}
    assert expected <= set(found), f"pins without a renovate comment: {expected - set(found)}"
    # Go modules (the kwok cluster's binaries) through Renovate's `go` datasource.
    assert set(found.values()) <= {"docker", "helm", "github-releases", "go"}


def test_the_check_passes_on_this_repository(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = check_platform(REPO.root, capsys, monkeypatch)
    assert code == 0, err
    assert "0 problem(s)" in out


def test_a_version_that_disagrees_with_the_pin_file_fails(
    repo_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = repo_copy / "platform" / "controllers" / "istiod.yaml"
    release.write_text(release.read_text().replace('version: "1.27.1"', 'version: "1.27.0"'))
    code, _, err = check_platform(repo_copy, capsys, monkeypatch)
    assert code == 1
    assert "Flux: istiod is istiod 1.27.0" in err
    assert "versions.yaml pins istiod 1.27.1" in err


def test_bumping_only_the_pin_file_fails_until_the_manifests_follow(
    repo_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pin_file = repo_copy / "versions.yaml"
    pin_file.write_text(pin_file.read_text().replace("version: v0.20.0", "version: v0.20.1"))
    code, _, err = check_platform(repo_copy, capsys, monkeypatch)
    assert code == 1
    for tool in ("Flux", "Argo CD"):
        assert f"{tool}: kserve-crd is kserve-crd v0.20.0" in err
