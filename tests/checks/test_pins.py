"""versions.yaml is the one pin file: Flux, Argo CD and the KnativeServing CR agree with it,
Renovate's regex manager sees every pin, and a disagreeing version fails the check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kserve_gitops.checks import platform_consistency
from kserve_gitops.delivery.sources import SERVED_DIRS
from kserve_gitops.repo import flux, install_plan
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


def _renovate() -> dict:
    return dict(json.loads((REPO.root / "renovate.json").read_text()))


def _file_pattern(pattern: str) -> re.Pattern[str]:
    """A Renovate managerFilePatterns entry (`/regex/`) as a Python pattern."""
    assert pattern.startswith("/") and pattern.endswith("/"), pattern
    return re.compile(pattern[1:-1])


def _renovate_patterns(path: str = "versions.yaml") -> list[re.Pattern[str]]:
    """The match strings of every regex manager whose files include `path`."""
    managers = [
        m
        for m in _renovate()["customManagers"]
        if m["customType"] == "regex"
        and any(_file_pattern(p).search(path) for p in m["managerFilePatterns"])
    ]
    assert managers, f"no regex manager of renovate.json reads {path}"
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
        versions["argocd"]["version"],
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
    release = repo_copy / "platform" / "controllers" / "cert-manager.yaml"
    release.write_text(release.read_text().replace('version: "v1.21.1"', 'version: "v1.21.0"'))
    code, _, err = check_platform(repo_copy, capsys, monkeypatch)
    assert code == 1
    assert "Flux: cert-manager is cert-manager v1.21.0" in err
    assert "versions.yaml pins cert-manager v1.21.1" in err


def test_bumping_only_the_pin_file_fails_until_the_manifests_follow(
    repo_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pin_file = repo_copy / "versions.yaml"
    pin_file.write_text(pin_file.read_text().replace("version: v0.20.0", "version: v0.20.1"))
    code, _, err = check_platform(repo_copy, capsys, monkeypatch)
    assert code == 1
    for tool in ("Flux", "Argo CD"):
        assert f"{tool}: kserve-crd is kserve-crd v0.20.0" in err


def test_renovate_reaches_every_place_a_bump_must_change() -> None:
    """A version bump reaches, in the same pull request, versions.yaml (above), every Flux source
    and HelmRelease (Renovate's flux manager), every ApplicationSet element and the KnativeServing
    (regex managers)."""
    config = _renovate()
    assert "flux" in config["enabledManagers"]
    flux_files = [_file_pattern(p) for p in config["flux"]["managerFilePatterns"]]
    # Every folder Flux reads: a chart source or a pinned chart version outside platform/ fails.
    for path in sorted(p for top in SERVED_DIRS for p in (REPO.root / top).rglob("*.yaml")):
        rel = REPO.rel(path)
        text = path.read_text()
        kinds = set(re.findall(r"^kind: (\w+)$", text, re.M))
        pinned = "HelmRelease" in kinds and re.search(r"^ {6}version: ", text, re.M)
        if kinds & {"HelmRepository", "OCIRepository"} or pinned:
            assert any(p.search(rel) for p in flux_files), f"the flux manager skips {rel}"
    appset = "argocd/base/applicationset.yaml"
    found = {
        m.group("depName"): m.group("currentValue")
        for p in _renovate_patterns(appset)
        for m in p.finditer((REPO.root / appset).read_text())
    }
    charts = {c.chart: c.version for c in install_plan.argocd_components(REPO, "dev")}
    upstream = {k: v for k, v in charts.items() if k and not k.startswith("./")}
    assert found == upstream
    serving = "platform/configs/knative-serving.yaml"
    [match] = [
        m
        for p in _renovate_patterns(serving)
        for m in p.finditer((REPO.root / serving).read_text())
    ]
    assert match.group("currentValue") == REPO.versions["knative"]["serving"]
    group = next(r for r in config["packageRules"] if r.get("groupName") == "platform pins")
    assert {"versions.yaml", "platform/**", "argocd/**"} <= set(group["matchFileNames"])


def test_crd_pins_follow_versions_yaml() -> None:
    """Renovate cannot recompute a CRD's sha256: config/crds.tsv is checked against the pins."""
    from kserve_gitops.upstream import crds

    v = REPO.versions
    expected = {
        "istio/api": str(v["istio"]["version"]),
        "knative/operator": f"knative-v{v['knative']['operator']}",
        "kserve/kserve": v["kserve"]["version"],
        "fluxcd/source-controller": v["flux"]["sourceController"],
        "fluxcd/kustomize-controller": v["flux"]["kustomizeController"],
        "fluxcd/helm-controller": v["flux"]["helmController"],
        "argoproj/argo-cd": v["argocd"]["version"],
    }
    for pin in crds.pins(REPO):
        if pin.upstream in expected:
            assert pin.tag == expected[pin.upstream], (
                f"config/crds.tsv: {pin.file} is {pin.upstream} {pin.tag}, versions.yaml pins "
                f"{expected[pin.upstream]}: update its tag, path, URL and sha256"
            )
            assert f"/{pin.tag}/" in pin.url, pin.url
