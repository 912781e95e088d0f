"""`make validate` on the real repository, and on copies broken one way each: every broken
input exits non-zero with the file and the field in the message. Run in this interpreter
(tests/checks/broken_copy.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests import REPO
from tests.broken_copy import run_validate

PROD_VALUES = "environments/prod/models/sklearn-iris.yaml"
TEMPLATE = "charts/inference-service/templates/inferenceservice.yaml"
STAGING_ENV = "environments/staging/environment.yaml"
DEV_ENV = "environments/dev/environment.yaml"
ISVC_CRD = ".cache/crds/kserve/serving.kserve.io_inferenceservices.yaml"


def test_repository_validates_with_a_summary_per_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    proc = run_validate(REPO.root, capsys)
    assert proc.code == 0, proc.stderr
    assert "validation passed" in proc.stdout
    for env in REPO.environment_names:
        line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith(env + " "))
        assert "InferenceService 1" in line and "HelmRelease" in line and "Kustomization" in line


def _edit_yaml(path: Path, change: Callable[[dict], None]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _set(*keys_and_value: object) -> Callable[[dict], None]:
    *keys, value = keys_and_value

    def change(data: dict) -> None:
        for key in keys[:-1]:
            data = data.setdefault(key, {})
        data[keys[-1]] = value

    return change


def _drop(*keys: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        for key in keys[:-1]:
            data = data[key]
        del data[keys[-1]]

    return change


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


BROKEN: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "unknown values key": (
        lambda r: _edit_yaml(r / PROD_VALUES, _set("predictor", "replicas", 3)),
        [PROD_VALUES, "replicas"],
    ),
    "wrong type": (
        lambda r: _edit_yaml(r / PROD_VALUES, _set("predictor", "minReplicas", "two")),
        [PROD_VALUES, "minReplicas"],
    ),
    "negative replicas": (
        lambda r: _edit_yaml(r / PROD_VALUES, _set("predictor", "minReplicas", -1)),
        [PROD_VALUES, "minReplicas"],
    ),
    "min above max": (
        lambda r: _edit_yaml(r / PROD_VALUES, _set("predictor", "minReplicas", 12)),
        [PROD_VALUES, "minReplicas (12)", "maxReplicas (10)"],
    ),
    "missing storageUri": (
        lambda r: _edit_yaml(r / PROD_VALUES, _drop("model", "storageUri")),
        [PROD_VALUES, "storageUri"],
    ),
    "malformed values YAML": (
        lambda r: _append(r / PROD_VALUES, "predictor: [unclosed\n"),
        [PROD_VALUES, "YAML"],
    ),
    "template renders an unknown InferenceService field": (
        lambda r: (r / TEMPLATE).write_text(
            (r / TEMPLATE).read_text().replace("predictor:\n", "predictor:\n    replicaz: 2\n", 1)
        ),
        [TEMPLATE.split("/", 2)[2], "InferenceService/sklearn-iris", "spec.predictor", "replicaz"],
    ),
    "CRD checksum mismatch": (
        lambda r: _append(r / ISVC_CRD, "# tampered\n"),
        [ISVC_CRD, "sha256 mismatch", "serving.kserve.io_inferenceservices.yaml"],
    ),
    "environment missing its values": (
        lambda r: (r / PROD_VALUES).unlink(),
        ["environments/prod/models", "sklearn-iris.yaml"],
    ),
    "pin file version format": (
        lambda r: _edit_yaml(r / "versions.yaml", _set("kserve", "version", "0.20")),
        ["versions.yaml", "kserve.version", "v0.20.0"],
    ),
    "kind with no schema": (
        lambda r: (
            (r / "environments/dev/models/widget.yaml").write_text(
                "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
            ),
            _edit_yaml(
                r / "environments/dev/models/kustomization.yaml",
                lambda d: d["resources"].append("widget.yaml"),
            ),
        ),
        ["environments/dev/models", "Widget/w", "no schema"],
    ),
    "Flux object with an unknown field": (
        lambda r: _edit_yaml(
            r / "environments/base/models/helmrelease-sklearn-iris.yaml",
            _set("spec", "intervall", "5m"),
        ),
        ["environments/base/models", "HelmRelease/sklearn-iris", "spec", "intervall"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_input_is_reported_with_file_and_field(
    case: str, repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    breaker, expected = BROKEN[case]
    breaker(repo_copy)
    run_validate(repo_copy, capsys).assert_fails_with(expected)


def test_all_errors_are_reported_before_exit(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three inputs broken at once, a broken promotion chain among them (the checks go on over
    the environments found): each is reported with its file and field."""
    _edit_yaml(repo_copy / PROD_VALUES, _set("predictor", "canaryTrafficPercent", 150))
    _edit_yaml(repo_copy / DEV_ENV, _set("sync", "sometimes"))
    _edit_yaml(repo_copy / STAGING_ENV, _set("promotesTo", "dev"))
    proc = run_validate(repo_copy, capsys)
    proc.assert_fails_with(
        [
            *(PROD_VALUES, "canaryTrafficPercent", "100"),
            *(DEV_ENV, "sync", "sometimes"),
            *(STAGING_ENV, "promotesTo", "dev closes a cycle (dev -> staging -> dev)"),
        ]
    )
    assert "checked " in proc.stdout
