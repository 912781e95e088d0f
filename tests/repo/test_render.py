"""`make render` and `make diff`: what an environment applies, and what promotion changes."""

from __future__ import annotations

import re

import pytest
import yaml

from tests import REPO
from tests.broken_copy import in_process

Capture = pytest.CaptureFixture[str]


def run(capsys: Capture, *args: str) -> tuple[int, str, str]:
    """`kgops render args` in this process."""
    done = in_process("render", REPO.root, capsys, *args)
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
