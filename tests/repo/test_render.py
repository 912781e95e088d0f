"""`make render` and `make diff`: what an environment applies, and what promotion changes."""

from __future__ import annotations

import re

import yaml

from tests.conftest import Kgops


def test_render_prod_prints_valid_yaml_with_the_model(kgops: Kgops) -> None:
    proc = kgops("render", "prod")
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["name"] == "sklearn-iris"
    assert predictor["model"]["modelFormat"]["name"] == "sklearn"
    assert predictor["minReplicas"] >= 2 and "sklearn" not in predictor
    assert {d["kind"] for d in docs} >= {"HelmRelease", "KnativeServing", "InferenceService"}


def test_diff_shows_what_promotion_to_prod_changes(kgops: Kgops) -> None:
    proc = kgops("render", "--diff", "staging", "prod")
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"staging -> prod: \d+ changed, \d+ added, \d+ removed\n", proc.stdout)
    assert "~ InferenceService models/sklearn-iris\n" in proc.stdout
    assert "-    spec.predictor.minReplicas: 1\n+    spec.predictor.minReplicas: 2\n" in proc.stdout
    # Generated values ConfigMaps compare by name without kustomize's hash, values field by field.
    assert "~ ConfigMap flux-system/sklearn-iris-values\n" in proc.stdout
    assert '-    data["values.yaml"].predictor.minReplicas: 1\n' in proc.stdout
    # The HelmReleases differ only in the hashed name of their values ConfigMap: no change.
    assert "HelmRelease" not in proc.stdout


def test_diff_of_an_environment_with_itself_is_empty(kgops: Kgops) -> None:
    proc = kgops("render", "--diff", "dev", "dev")
    assert proc.returncode == 0 and proc.stdout.startswith("no differences")


def test_unknown_environment_names_the_known_ones(kgops: Kgops) -> None:
    proc = kgops("render", "qa")
    assert proc.returncode == 1
    assert "environments/qa/environment.yaml" in proc.stderr and "dev, prod, staging" in proc.stderr
