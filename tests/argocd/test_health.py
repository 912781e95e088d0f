"""Argo CD's Lua health checks run here give the verdicts Argo CD's own tests expect
(health_test.yaml of every kind), and our InferenceService check (argocd/base/argocd-cm.yaml)
differs from upstream only for a serverless InferenceService scaled to zero."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kserve_gitops.argocd import health, sources
from tests import REPO

CACHE = sources.ensure(REPO)
DATA = Path(__file__).parent / "data"
KINDS = [
    "serving.kserve.io/InferenceService",
    "serving.knative.dev/Service",
    "helm.toolkit.fluxcd.io/HelmRelease",
    "kustomize.toolkit.fluxcd.io/Kustomization",
]
# Upstream cases where our check deliberately gives another verdict, with the reason: none, as
# no upstream case is a serverless InferenceService at zero (minReplicas 0, revision ready).
DIFFERS: dict[str, str] = {}


class _JSONLoader(yaml.SafeLoader):
    """YAML as Argo CD's tests read it (sigs.k8s.io/yaml, through JSON): timestamps stay strings."""


_JSONLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.load(path.read_text(), Loader=_JSONLoader))


def _cases() -> list[Any]:
    out = []
    for kind in KINDS:
        folder = CACHE / kind
        for case in yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]:
            expected = health.Verdict(**case["healthStatus"])
            path = folder / case["inputPath"]
            out.append(pytest.param(path, expected, id=f"{kind}/{case['inputPath']}"))
    return out


CASES = _cases()


def test_every_kind_has_upstream_cases() -> None:
    assert {p.id.rsplit("/testdata/", 1)[0] for p in CASES} == set(KINDS)
    assert len(CASES) == 20


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_upstream_check_gives_argo_cds_expected_verdict(path: Path, expected: health.Verdict):
    assert health.evaluate(load(path), repo=REPO) == expected


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_our_check_agrees_with_upstream_cases(path: Path, expected: health.Verdict) -> None:
    case = f"{path.parent.parent.parent.name}/{path.parent.parent.name}/testdata/{path.name}"
    got = health.evaluate(load(path), customized=True, repo=REPO)
    assert (got != expected) == (case in DIFFERS), DIFFERS.get(case, got)


def test_only_the_inference_service_is_customized() -> None:
    for kind in KINDS:
        group, _, name = kind.partition("/")
        ours = health.script(group, name, customized=True, repo=REPO)
        upstream = (CACHE / kind / "health.lua").read_text()
        assert (ours != upstream) == (name == "InferenceService"), kind


def test_our_check_is_upstream_plus_the_scale_to_zero_branch() -> None:
    ours = health.script("serving.kserve.io", "InferenceService", customized=True, repo=REPO)
    upstream = (CACHE / "serving.kserve.io/InferenceService/health.lua").read_text()
    condition = 'transitionStatus ~= "UpToDate" then'
    patched = condition.replace(" then", " and not scaled_to_zero(obj) then")
    expected = upstream.replace(condition, patched)
    strip = "\n".join(line.rstrip() for line in expected.splitlines())
    assert ours.endswith(strip + "\n")
    assert "kserve/kserve#6079" in ours and "kserve/kserve#6089" in ours


def test_scaled_to_zero_is_progressing_upstream_and_healthy_in_ours() -> None:
    obj = load(DATA / "sklearn-iris-scaled-to-zero.yaml")
    upstream = health.evaluate(obj, repo=REPO)
    assert upstream == health.Verdict("Progressing", "0: transitionStatus | InProgress")
    ours = health.evaluate(obj, customized=True, repo=REPO)
    assert ours == health.Verdict("Healthy", "InferenceService is healthy.")


def _edit(path: list[Any], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(load(DATA / "sklearn-iris-scaled-to-zero.yaml"))
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("path", "value", "status"),
    [
        # Not at zero by design: a pod should be there.
        (["spec", "predictor", "minReplicas"], 1, "Progressing"),
        # A new revision is rolling out.
        (["status", "components", "predictor", "latestReadyRevision"], "x-00000", "Progressing"),
        # Pods are up: the transition is real.
        (["status", "modelStatus", "copies", "totalCopies"], 1, "Progressing"),
        # Never loaded: the first deployment is still starting.
        (["status", "modelStatus", "states", "activeModelState"], "Pending", "Progressing"),
        # A failed load stays Degraded.
        (["status", "modelStatus", "transitionStatus"], "BlockedByFailedLoad", "Degraded"),
        (["status", "conditions", 3, "status"], "False", "Progressing"),
    ],
    ids=["min-replicas-1", "revision-rolling", "pods-up", "never-loaded", "failed", "not-ready"],
)
def test_our_check_stays_upstream_outside_scale_to_zero(
    path: list[Any], value: Any, status: str
) -> None:
    obj = _edit(path, value)
    ours = health.evaluate(obj, customized=True, repo=REPO)
    assert ours == health.evaluate(obj, repo=REPO)
    assert ours.status == status


def test_lua_5_1_with_argo_cds_libraries() -> None:
    script = """
    return {status = "Healthy", message = _VERSION .. " " .. tostring(obj.n / 2) .. " " ..
      type(os) .. " " .. type(io) .. " " .. type(python) .. " " .. type(require("os").time)}
    """
    verdict = health.run(script, {"n": 3})
    assert verdict == health.Verdict("Healthy", "Lua 5.1 1.5 nil nil nil function")


def test_an_invalid_status_or_a_script_error_is_unknown() -> None:
    invalid = health.Verdict("Unknown", health.INVALID_STATUS)
    assert health.run('return {status = "Fine"}', {}) == invalid
    assert health.run("return true", {}).message == (
        "expect table output from Lua script, not boolean"
    )
    verdict = health.run("return obj.spec.suspend", {})
    assert verdict.status == "Unknown" and "spec" in verdict.message


def test_a_kind_without_a_check_is_an_error() -> None:
    with pytest.raises(health.HealthCheckError, match="no Lua health check for apps/Deployment"):
        health.evaluate({"apiVersion": "apps/v1", "kind": "Deployment"}, repo=REPO)
