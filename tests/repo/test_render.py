"""`make render` and `make diff`: what an environment applies, and what promotion changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kserve_gitops.repo import render
from tests import REPO
from tests.broken_copy import edit, in_process

Capture = pytest.CaptureFixture[str]


def run(capsys: Capture, *args: str, root: Path = REPO.root) -> tuple[int, str, str]:
    """`kgops render args` in this process."""
    done = in_process("render", root, capsys, *args)
    return done.returncode, done.stdout, done.stderr


def test_render_prod_prints_valid_yaml_with_the_model(capsys: Capture) -> None:
    code, out, err = run(capsys, "prod")
    assert code == 0, err
    docs = [d for d in yaml.safe_load_all(out) if d]
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["name"] == "sklearn-iris"
    assert predictor["model"]["modelFormat"]["name"] == "sklearn"
    assert predictor["minReplicas"] >= 2 and "sklearn" not in predictor
    assert {d["kind"] for d in docs} >= {"HelmRelease", "KnativeServing", "InferenceService"}


def test_diff_shows_what_promotion_to_prod_changes(capsys: Capture) -> None:
    code, out, err = run(capsys, "--diff", "staging", "prod")
    assert code == 0, err
    assert re.match(r"staging -> prod: \d+ changed, \d+ added, \d+ removed\n", out)
    assert "~ InferenceService models/sklearn-iris\n" in out
    assert "-    spec.predictor.minReplicas: 1\n+    spec.predictor.minReplicas: 2\n" in out
    # Generated values ConfigMaps compare by name without kustomize's hash, values field by field.
    assert "~ ConfigMap flux-system/sklearn-iris-values\n" in out
    assert '-    data["values.yaml"].predictor.minReplicas: 1\n' in out
    # The HelmReleases differ only in the hashed name of their values ConfigMap: no change.
    assert "HelmRelease" not in out


def test_diff_of_an_environment_with_itself_is_empty(capsys: Capture) -> None:
    code, out, _ = run(capsys, "--diff", "dev", "dev")
    assert code == 0 and out.startswith("no differences")


def test_unknown_environment_names_the_known_ones(capsys: Capture) -> None:
    code, _, err = run(capsys, "qa")
    assert code == 1
    assert "environments/qa/environment.yaml" in err and "dev, prod, staging" in err


@pytest.mark.parametrize("env", REPO.environment_names)
def test_render_builds_the_layers_the_flux_kustomizations_of_the_cluster_apply(env: str) -> None:
    """One definition of what an environment applies: the Flux Kustomizations of clusters/<env>,
    in dependsOn order, the monitoring layer included, then the models from their values."""
    cluster = render.kustomize_build(REPO, REPO.root / "clusters" / env)
    paths = [
        str(k["spec"]["path"]).removeprefix("./") for k in cluster if k["kind"] == "Kustomization"
    ]
    assert all(p.startswith(f"environments/{env}/") for p in paths), paths
    objs = render.environment_objects(REPO, env)
    built = [o.source.removeprefix("kustomize build ") for o in objs]
    assert sorted(dict.fromkeys(b for b in built if b in paths)) == sorted(paths)
    assert built.index(f"environments/{env}/platform/crds") == 0
    assert {o.kind for o in objs} >= {"PrometheusRule", "ServiceMonitor", "InferenceService"}


def test_a_layer_dropped_from_the_flux_entry_point_leaves_the_render(
    repo_copy: Path, capsys: Capture
) -> None:
    edit(repo_copy / "clusters/base/kustomization.yaml", "  - platform-monitoring.yaml\n", "")
    code, out, err = run(capsys, "dev", root=repo_copy)
    assert code == 0, err
    assert "kind: PrometheusRule" not in out and "kind: InferenceService" in out


def test_components_are_built_inside_the_kustomizations_that_include_them() -> None:
    dirs = {REPO.rel(d) for d in render.kustomization_dirs(REPO)}
    assert "clusters/components/environment" not in dirs
    assert {"clusters/dev", "environments/base/models", "platform/controllers"} <= dirs
